//! A PartyKit project's `partykit.json`, read into the server's config: its
//! parties become JavaScript parties, its `vars` their `room.env`, its
//! `serve` folder the static files answered for paths that are not rooms.
//!
//! ```json
//! { "name": "chat", "main": "src/server.ts", "parties": { "lobby": "src/lobby.ts" },
//!   "vars": { "KEY": "value" }, "serve": "public", "compatibilityDate": "2024-01-01" }
//! ```
//!
//! `main` is the party `main` (`/party/:room` and `/parties/main/:room`).
//! A party of the same name in the TOML config that names no `kind` or
//! `main` gives the project's party its options (`hibernate`, limits...);
//! one that does is an error, so nothing is silently replaced. Keys
//! dormouse has no use for (`compatibilityDate`, build options) are logged
//! and ignored.

use crate::config::Config;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `partykit.json` cannot be used: which file and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ProjectError {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartykitJson {
    main: Option<PathBuf>,
    #[serde(default)]
    parties: BTreeMap<String, PathBuf>,
    #[serde(default)]
    vars: BTreeMap<String, serde_json::Value>,
    serve: Option<Serve>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Serve {
    Path(PathBuf),
    Options {
        path: PathBuf,
        #[serde(default, rename = "singlePageApp")]
        single_page_app: bool,
    },
}

/// Keys PartyKit's CLI reads that change nothing here.
const NOT_USED: &[(&str, &str)] = &[
    ("name", "the project's name on PartyKit's platform"),
    ("compatibilityDate", "dormouse runs one engine; there is no date to pin"),
    ("compatibilityFlags", "dormouse runs one engine; there are no flags to set"),
    ("$schema", "editor support only"),
];

/// Reads the project at `path` into `config`.
pub(crate) fn apply(config: &mut Config, path: &Path) -> Result<(), ProjectError> {
    let error = |reason: String| ProjectError { path: path.to_owned(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read it: {e}")))?;
    let project: PartykitJson = serde_json::from_str(&text).map_err(|e| error(format!("{e}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    for (key, value) in &project.other {
        match NOT_USED.iter().find(|(name, _)| name == key) {
            Some((_, why)) => tracing::info!(project = %path.display(), "`{key}` is ignored: {why}"),
            None => tracing::warn!(project = %path.display(), "`{key}` ({value}) is not used by dormouse"),
        }
    }
    let vars: BTreeMap<String, String> = project
        .vars
        .iter()
        .map(|(name, value)| match value {
            serde_json::Value::String(text) => (name.clone(), text.clone()),
            other => (name.clone(), other.to_string()),
        })
        .collect();
    let mut parties: Vec<(String, PathBuf)> =
        project.main.iter().map(|main| ("main".to_owned(), main.clone())).collect();
    parties.extend(project.parties.iter().map(|(name, main)| (name.clone(), main.clone())));
    if parties.is_empty() {
        return Err(error("names no `main` and no `parties`: there is nothing to serve".to_owned()));
    }
    for (name, main) in parties {
        if !crate::config::is_valid_party_name(&name) {
            return Err(error(format!("party {name:?}: a party name is 1-64 characters of a-z, 0-9, '-' and '_'")));
        }
        let party = config.parties.entry(name.clone()).or_default();
        if party.kind.is_some() || party.main.is_some() {
            return Err(error(format!(
                "party {name:?} is also defined in the config (with `kind` or `main`); \
                 leave those out there to give the project's party options"
            )));
        }
        party.main = Some(dir.join(main));
        for (key, value) in &vars {
            party.vars.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    if let Some(serve) = project.serve {
        let (folder, single_page_app) = match serve {
            Serve::Path(folder) => (folder, false),
            Serve::Options { path, single_page_app } => (path, single_page_app),
        };
        if config.serve.is_none() {
            config.serve = Some(dir.join(folder));
            config.single_page_app = single_page_app;
        }
    }
    Ok(())
}
