//! The build step inside the server: a party's `main` and everything it
//! imports, compiled to JavaScript at start-up, so no Node.js or bundler is
//! needed at run time.
//!
//! Each module is parsed with `oxc`; TypeScript has its types stripped (no
//! type check), and imports used only as types disappear with them (so
//! `import type * as Party from "partykit/server"` needs nothing). The
//! remaining imports are resolved as a bundler for workers would
//! (`oxc_resolver`: relative files, then packages from `node_modules`,
//! through `exports` with the conditions `workerd`, `worker`, `browser`,
//! `import`, `default`, or `module`/`main`), recursively. The result is a
//! module graph (CommonJS modules wrapped as ES modules, see
//! `commonjs_module`): every module's JavaScript by name, and every import's
//! target. A room's context loads its modules from it (`Bundle::source`,
//! `Bundle::link`); nothing is read from disk after start-up.
//!
//! Every syntax or resolve error is reported as `file:line:col: message`.

use super::ScriptError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The module a value import of `partykit/server` gets: that package
/// exports only types, and projects have it only as a dev dependency.
const PARTYKIT_SERVER: &str = "partykit/server";

/// Files a module may be, in the order a bare path tries them.
const EXTENSIONS: [&str; 8] = [".ts", ".tsx", ".mts", ".js", ".mjs", ".jsx", ".cjs", ".json"];

/// A compiled module graph.
#[derive(Debug, Default)]
pub(crate) struct Bundle {
    /// The entry module's name.
    pub entry: String,
    /// JavaScript by module name.
    modules: HashMap<String, String>,
    /// (importing module, specifier) to the imported module's name.
    links: HashMap<(String, String), String>,
    /// QuickJS bytecode by module name, compiled once at start-up.
    bytecode: HashMap<String, Vec<u8>>,
    /// For the project's own modules (not `node_modules`): positions in
    /// the compiled JavaScript to positions in the source, so a stack names
    /// the line the user wrote.
    positions: HashMap<String, Positions>,
}

/// A module's source map, as a table: (line, column) in the JavaScript to
/// (line, column) in the source, all 0-based, sorted.
#[derive(Debug, Default)]
struct Positions(Vec<[u32; 4]>);

impl Positions {
    /// The source position of the generated one, from the mapping at or
    /// before it on its line.
    fn source(&self, line: u32, col: u32) -> Option<(u32, u32)> {
        let at = self.0.partition_point(|&[l, c, _, _]| (l, c) <= (line, col));
        let [l, _, src_line, src_col] = *self.0.get(at.checked_sub(1)?)?;
        (l == line).then_some((src_line, src_col))
    }
}

impl Bundle {
    /// The JavaScript of module `name`.
    pub fn source(&self, name: &str) -> Option<&str> {
        self.modules.get(name).map(String::as_str)
    }

    /// The bytecode of module `name`, once compiled.
    pub fn bytecode(&self, name: &str) -> Option<&[u8]> {
        self.bytecode.get(name).map(Vec::as_slice)
    }

    /// Keeps the modules' bytecode (see `engine::compile`).
    pub fn set_bytecode(&mut self, bytecode: HashMap<String, Vec<u8>>) {
        self.bytecode = bytecode;
    }

    /// `name:line:col` (1-based) in the source, for a position in module
    /// `name`'s JavaScript; `None` when it has no source map.
    pub fn original(&self, name: &str, line: u32, col: u32) -> Option<(u32, u32)> {
        let (line, col) = self.positions.get(name)?.source(line.checked_sub(1)?, col.checked_sub(1)?)?;
        Some((line + 1, col + 1))
    }

    /// The module `specifier` names when `base` imports it.
    pub fn link(&self, base: &str, specifier: &str) -> Option<&str> {
        self.links.get(&(base.to_owned(), specifier.to_owned())).map(String::as_str)
    }
}

/// Compiles `entry` and every module it imports.
pub(crate) fn build(entry: &Path) -> Result<Bundle, ScriptError> {
    let root = entry.parent().map(Path::to_owned).unwrap_or_default();
    let resolver = oxc_resolver::Resolver::new(oxc_resolver::ResolveOptions {
        condition_names: ["workerd", "worker", "browser", "import", "default"].map(String::from).to_vec(),
        main_fields: ["browser", "module", "main"].map(String::from).to_vec(),
        extensions: EXTENSIONS.map(String::from).to_vec(),
        builtin_modules: true,
        ..oxc_resolver::ResolveOptions::default()
    });
    let name_of = |path: &Path| -> String {
        match path.strip_prefix(&root) {
            Ok(relative) if !root.as_os_str().is_empty() => relative.display().to_string(),
            _ => path.display().to_string(),
        }
    };
    let mut bundle = Bundle { entry: name_of(entry), ..Bundle::default() };
    let mut queue: Vec<PathBuf> = vec![entry.to_owned()];
    while let Some(path) = queue.pop() {
        let name = name_of(&path);
        if bundle.modules.contains_key(&name) {
            continue;
        }
        let source = std::fs::read_to_string(&path)
            .map_err(|e| ScriptError(format!("{}: cannot read the module: {e}", path.display())))?;
        let (js, imports, positions) = compile(&name, &path, &source)?;
        let own = !path.components().any(|c| c.as_os_str() == "node_modules");
        if let (true, Some(positions)) = (own, positions) {
            bundle.positions.insert(name.clone(), positions);
        }
        bundle.modules.insert(name.clone(), js);
        for (specifier, offset) in imports {
            let target = if specifier == PARTYKIT_SERVER {
                bundle.modules.entry(PARTYKIT_SERVER.to_owned()).or_insert_with(|| "export {};".to_owned());
                PARTYKIT_SERVER.to_owned()
            } else {
                let dir = path.parent().unwrap_or(Path::new("."));
                let resolved = resolver.resolve(dir, &specifier).map_err(|e| {
                    let (line, col) = line_col(&source, offset);
                    ScriptError(format!("{name}:{line}:{col}: cannot resolve {specifier:?}: {}", why(&e)))
                })?;
                let target = resolved.full_path();
                let target_name = name_of(&target);
                queue.push(target);
                target_name
            };
            bundle.links.insert((name.clone(), specifier), target);
        }
    }
    Ok(bundle)
}

/// What a resolve error means, in a user's words.
fn why(error: &oxc_resolver::ResolveError) -> String {
    match error {
        oxc_resolver::ResolveError::NotFound(_) => {
            "no such file, nor a package of that name in node_modules (run npm install?)".to_owned()
        }
        oxc_resolver::ResolveError::Builtin { .. } => "Node.js's built-in modules are not available".to_owned(),
        other => other.to_string(),
    }
}

/// 1-based line and column of byte `offset` in `source` (the column in
/// characters).
fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    (line, col)
}

/// A module compiled: its JavaScript, the specifiers it imports (with
/// where), and its source map when it has one.
type Compiled = (String, Vec<(String, usize)>, Option<Positions>);

/// One module to JavaScript.
fn compile(name: &str, path: &Path, source: &str) -> Result<Compiled, ScriptError> {
    use oxc_allocator::Allocator;
    use oxc_span::SourceType;

    if path.extension().is_some_and(|ext| ext == "json") {
        serde_json::from_str::<serde_json::Value>(source)
            .map_err(|e| ScriptError(format!("{name}:{}:{}: {e}", e.line(), e.column())))?;
        // `__cjsExports` is what a CommonJS `require` of it answers.
        let js = format!("const __json = {source};\nexport default __json;\nexport {{ __json as __cjsExports }};\n");
        return Ok((js, Vec::new(), None));
    }
    let at = |offset: u32, message: &str| {
        let (line, col) = line_col(source, offset as usize);
        ScriptError(format!("{name}:{line}:{col}: {message}"))
    };
    let allocator = Allocator::default();
    let source_type = SourceType::from_path(path).unwrap_or_default();
    let parsed = oxc_parser::Parser::new(&allocator, source, source_type).parse();
    if let Some(error) = parsed.diagnostics.first() {
        let offset = error.labels.first().map_or(0, |l| l.offset());
        return Err(at(offset, &format!("SyntaxError: {}", error.message)));
    }
    let mut program = parsed.program;
    let esm = program.body.iter().any(|statement| statement.is_module_declaration());
    let commonjs = path.extension().is_some_and(|ext| ext == "cjs")
        || (!esm && (source.contains("module.exports") || source.contains("exports.") || source.contains("require(")));
    if commonjs {
        return Ok(commonjs_module(name, path, source, &program));
    }
    let semantic = oxc_semantic::SemanticBuilder::new().with_excess_capacity(2.0).with_enum_eval(true).build(&program);
    let scoping = semantic.semantic.into_scoping();
    let options = oxc_transformer::TransformOptions::default();
    let transformed =
        oxc_transformer::Transformer::new(&allocator, path, &options).build_with_scoping(scoping, &mut program);
    if let Some(error) = transformed.diagnostics.first() {
        let offset = error.labels.first().map_or(0, |l| l.offset());
        return Err(at(offset, &error.message));
    }
    let mut imports = Vec::new();
    for statement in &program.body {
        if let Some(source) = statement.as_module_declaration().and_then(|d| d.source()) {
            imports.push((source.value.to_string(), source.span.start as usize));
        }
    }
    let options = oxc_codegen::CodegenOptions { source_map_path: Some(path.to_owned()), ..Default::default() };
    let generated = oxc_codegen::Codegen::new().with_options(options).build(&program);
    let positions = generated.map.map(|map| {
        let mut table: Vec<[u32; 4]> =
            map.get_tokens().map(|t| [t.get_dst_line(), t.get_dst_col(), t.get_src_line(), t.get_src_col()]).collect();
        table.sort_unstable();
        Positions(table)
    });
    Ok((generated.code, imports, positions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compiled_position_maps_to_the_typescript_line() {
        let dir = std::env::temp_dir().join(format!("dormouse-bundle-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = "import type * as Party from \"partykit/server\";\n\ninterface Shape {\n  a: number;\n  b: string;\n}\n\ntype Alias = Shape | null;\n\nexport function explode(shape: Alias): never {\n  throw new Error(`no shape: ${shape}`);\n}\n";
        std::fs::write(dir.join("stack.ts"), source).unwrap();
        let bundle = build(&dir.join("stack.ts")).unwrap();
        let js = bundle.source("stack.ts").unwrap();
        let (index, text) = js.lines().enumerate().find(|(_, l)| l.contains("throw new Error")).unwrap();
        let col = text.find("throw").unwrap() + 1;
        assert_ne!(index + 1, 11, "the types before it moved the line in the JavaScript");
        assert_eq!(bundle.original("stack.ts", index as u32 + 1, col as u32), Some((11, 3)));
        assert_eq!(bundle.original("other.js", 1, 1), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// What a CommonJS module needs and gives, read from its syntax (as Node's
/// `cjs-module-lexer` does): the string-literal `require`s, and the names
/// it assigns on `exports` / `module.exports`.
#[derive(Default)]
struct CommonJs {
    requires: Vec<(String, usize)>,
    exports: std::collections::BTreeSet<String>,
}

impl<'a> oxc_ast_visit::Visit<'a> for CommonJs {
    fn visit_call_expression(&mut self, call: &oxc_ast::ast::CallExpression<'a>) {
        use oxc_ast::ast::{Argument, Expression};
        match (&call.callee, &call.arguments[..]) {
            (Expression::Identifier(callee), [Argument::StringLiteral(specifier)]) if callee.name == "require" => {
                self.requires.push((specifier.value.to_string(), specifier.span.start as usize));
            }
            (callee, [Argument::Identifier(target), Argument::StringLiteral(name), ..])
                if callee.is_specific_member_access("Object", "defineProperty") && target.name == "exports" =>
            {
                self.exports.insert(name.value.to_string());
            }
            _ => {}
        }
        oxc_ast_visit::walk::walk_call_expression(self, call);
    }

    fn visit_assignment_expression(&mut self, assignment: &oxc_ast::ast::AssignmentExpression<'a>) {
        use oxc_ast::ast::{Expression, ObjectPropertyKind};
        if let Some(member) = assignment.left.as_member_expression() {
            let object = member.object();
            match member.static_property_name() {
                Some(name)
                    if object.is_specific_id("exports") || object.is_specific_member_access("module", "exports") =>
                {
                    self.exports.insert(name.to_owned());
                }
                Some("exports") if object.is_specific_id("module") => {
                    if let Expression::ObjectExpression(literal) = &assignment.right {
                        for property in &literal.properties {
                            if let ObjectPropertyKind::ObjectProperty(property) = property {
                                if let Some(key) = property.key.static_name() {
                                    self.exports.insert(key.to_string());
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        oxc_ast_visit::walk::walk_assignment_expression(self, assignment);
    }
}

/// A CommonJS module as an ES module: its code runs in a function given
/// `module`, `exports` and a `require` that answers from the modules it
/// imports (each string-literal `require` becomes an import, evaluated
/// before it rather than at the call); `module.exports` is the default
/// export (or its `default`, when it marks itself `__esModule`), and each
/// name it assigns on `exports` a named one, so `import { x } from` works.
fn commonjs_module(name: &str, path: &Path, source: &str, program: &oxc_ast::ast::Program<'_>) -> Compiled {
    use oxc_ast_visit::Visit;
    const UNBUNDLED: &str = "only require() calls with a string literal are bundled";
    // A `#!` line is not JavaScript inside a function.
    let source = if source.starts_with("#!") { source.split_once('\n').map_or("", |(_, rest)| rest) } else { source };
    let mut found = CommonJs::default();
    found.visit_program(program);
    let mut js = String::new();
    let mut seen = std::collections::HashSet::new();
    let mut table = Vec::new();
    for (i, (specifier, _)) in found.requires.iter().enumerate() {
        if seen.insert(specifier.clone()) {
            let quoted = serde_json::to_string(specifier).expect("a string");
            js.push_str(&format!("import * as __cjs_dep{i} from {quoted};\n"));
            table.push(format!("[{quoted}, __cjs_dep{i}]"));
        }
    }
    let quoted_name = serde_json::to_string(name).expect("a string");
    let dir = path.parent().map(|d| d.display().to_string()).unwrap_or_default();
    js.push_str(&format!(
        "const __cjs_required = new Map([{}]);\n\
         function __cjs_require(specifier) {{\n\
           const ns = __cjs_required.get(specifier);\n\
           if (ns === undefined) throw new Error(`require(${{JSON.stringify(specifier)}}) in ${{{quoted_name}}}: {UNBUNDLED}`);\n\
           return Object.prototype.hasOwnProperty.call(ns, \"__cjsExports\") ? ns.__cjsExports : ns;\n\
         }}\n\
         const __cjs_module = {{ exports: {{}} }};\n\
         (function (exports, require, module, __filename, __dirname, global, process) {{\n{source}\n}}).call(\n\
           __cjs_module.exports, __cjs_module.exports, __cjs_require, __cjs_module, {quoted_name}, {}, globalThis,\n\
           globalThis.process ?? {{ env: {{ NODE_ENV: \"production\" }}, browser: true }});\n\
         const __cjsExports = __cjs_module.exports;\n\
         export {{ __cjsExports }};\n\
         export default __cjsExports && __cjsExports.__esModule && \"default\" in __cjsExports ? __cjsExports.default : __cjsExports;\n",
        table.join(", "),
        serde_json::to_string(&dir).expect("a string"),
    ));

    let names = found.exports.iter().filter(|n| is_identifier_name(n) && *n != "default" && *n != "__cjsExports");
    for (i, export) in names.enumerate() {
        js.push_str(&format!(
            "const __cjs_export{i} = __cjsExports[{:?}];\nexport {{ __cjs_export{i} as {export} }};\n",
            export
        ));
    }
    (js, found.requires, None)
}

/// An ECMAScript IdentifierName (ASCII), as an export name may be.
fn is_identifier_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}
