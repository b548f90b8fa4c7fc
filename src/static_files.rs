//! Static files (a PartyKit project's `serve` folder), answered for paths
//! that are not rooms.
//!
//! The folder is read into memory once, at start-up: the cores never touch
//! the disk for it, and a request costs a map lookup. It is bounded
//! (`MAX_FILES`, `MAX_BYTES`): a folder past either stops start-up with the
//! reason, rather than a server that holds an unknown amount of memory. A
//! path is looked up as given, then as a folder's `index.html`; with
//! `single_page_app`, a path with neither gets the root `index.html`.

use crate::http::Response;
use bytes::Bytes;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Most files held.
const MAX_FILES: usize = 10_000;
/// Most bytes held, all files together.
const MAX_BYTES: u64 = 256 << 20;

/// The folder can not be served: which and why.
#[derive(Debug, thiserror::Error)]
#[error("static files in {path}: {reason}")]
pub struct StaticError {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug)]
pub(crate) struct StaticFiles {
    /// By URL path ("/index.html"): content type and body.
    files: HashMap<String, (&'static str, Bytes)>,
    single_page_app: bool,
}

impl StaticFiles {
    pub(crate) fn load(root: &Path, single_page_app: bool) -> Result<StaticFiles, StaticError> {
        let error = |reason: String| StaticError { path: root.to_owned(), reason };
        let mut files = HashMap::new();
        let mut total = 0u64;
        let mut folders = vec![root.to_owned()];
        while let Some(folder) = folders.pop() {
            let entries =
                std::fs::read_dir(&folder).map_err(|e| error(format!("cannot read {}: {e}", folder.display())))?;
            for entry in entries {
                let entry = entry.map_err(|e| error(e.to_string()))?;
                let path = entry.path();
                let kind = entry.file_type().map_err(|e| error(e.to_string()))?;
                if kind.is_dir() {
                    folders.push(path);
                    continue;
                }
                let Ok(relative) = path.strip_prefix(root) else { continue };
                let Some(relative) = relative.to_str() else {
                    tracing::warn!(path = %path.display(), "a static file whose name is not UTF-8 is not served");
                    continue;
                };
                let body = std::fs::read(&path).map_err(|e| error(format!("cannot read {}: {e}", path.display())))?;
                total += body.len() as u64;
                if files.len() == MAX_FILES || total > MAX_BYTES {
                    return Err(error(format!(
                        "more than {MAX_FILES} files or {} MiB; serve them from elsewhere",
                        MAX_BYTES >> 20
                    )));
                }
                let url = format!("/{}", relative.replace(std::path::MAIN_SEPARATOR, "/"));
                files.insert(url, (content_type(&path), Bytes::from(body)));
            }
        }
        Ok(StaticFiles { files, single_page_app })
    }

    /// The file for a GET of `path`, if there is one.
    pub(crate) fn answer(&self, method: &str, path: &str) -> Option<Response> {
        if method != "GET" {
            return None;
        }
        let path = percent_encoding::percent_decode_str(path).decode_utf8().ok()?;
        let index = format!("{}/index.html", path.trim_end_matches('/'));
        let found = self.files.get(&*path).or_else(|| self.files.get(&index));
        let found = found.or_else(|| self.single_page_app.then(|| self.files.get("/index.html")).flatten())?;
        let (content_type, body) = found;
        Some(Response::new(200).with_header("content-type", *content_type).with_body(body.clone()))
    }
}

/// The content type of a file, by its extension.
fn content_type(path: &Path) -> &'static str {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "pdf" => "application/pdf",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}
