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
//! module graph: every module's JavaScript by name, and every import's
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
}

impl Bundle {
    /// The JavaScript of module `name`.
    pub fn source(&self, name: &str) -> Option<&str> {
        self.modules.get(name).map(String::as_str)
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
        let (js, imports) = compile(&name, &path, &source)?;
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

/// One module to JavaScript, and the specifiers it imports (with where).
fn compile(name: &str, path: &Path, source: &str) -> Result<(String, Vec<(String, usize)>), ScriptError> {
    use oxc_allocator::Allocator;
    use oxc_span::SourceType;

    if path.extension().is_some_and(|ext| ext == "json") {
        serde_json::from_str::<serde_json::Value>(source)
            .map_err(|e| ScriptError(format!("{name}:{}:{}: {e}", e.line(), e.column())))?;
        return Ok((format!("export default {source};"), Vec::new()));
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
        || (!esm && (source.contains("module.exports") || source.contains("exports.")));
    if commonjs {
        return Err(ScriptError(format!(
            "{name}: a CommonJS module (require / module.exports); only ES modules can be imported for now"
        )));
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
    let js = oxc_codegen::Codegen::new().build(&program).code;
    Ok((js, imports))
}
