//! The two `unsafe` calls heed requires, each with the proof that it is sound:
//! opening the memory-mapped environment, and resizing its map.

use std::path::Path;
use std::sync::RwLock;

use heed::{Env, EnvOpenOptions, WithoutTls};

/// Named databases in the environment: storage, snapshots, alarms, rooms,
/// meta, quarantine.
pub(crate) const DATABASES: u32 = 6;

/// Opens the environment at `dir` with read transactions that are not tied
/// to a thread (`MDB_NOTLS`): any thread may read, a reader slot is held only
/// while a transaction is open, and a thread that never reads holds none.
pub(crate) fn open_env(dir: &Path, map_size_bytes: usize) -> heed::Result<Env<WithoutTls>> {
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options.map_size(map_size_bytes).max_dbs(DATABASES);
    // SAFETY: heed's contract for `open` is that the memory-mapped file is not
    // modified except through LMDB while it is mapped. Within this process,
    // heed refuses to open the same path twice (`EnvAlreadyOpened`), and the
    // `Env` never leaves this crate's `Store`, which writes only through LMDB.
    // Other processes coordinate through LMDB's lock file, which we keep
    // (no `NO_LOCK` flag; no flags at all). Editing or truncating the files
    // behind LMDB's back is excluded by `Store::open`'s documentation.
    #[allow(unsafe_code)]
    unsafe {
        options.open(dir)
    }
}

/// Grows the map of `env` to `new_size` bytes.
///
/// The caller passes the gate under which every read transaction of `env` is
/// opened, and must itself hold no transaction (the writer calls this after
/// aborting its write transaction).
pub(crate) fn resize(env: &Env<WithoutTls>, gate: &RwLock<()>, new_size: usize) -> heed::Result<()> {
    let _no_readers = gate.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    // SAFETY: LMDB allows `mdb_env_set_mapsize` on an open environment only
    // while no transaction is active in this process. Write transactions are
    // opened by `Store::open`, which commits them before the writer thread
    // starts, and then only by that single writer thread, which is the caller
    // and has ended its transaction before calling (see `Writer::commit`).
    // Read transactions are only opened by `Store::read`, while holding a
    // read guard of `gate`, and they end before the guard is released; we
    // hold the write guard, so none is open. No other code in this process holds this
    // `Env`: it is private to the store, and heed refuses a second open of
    // the same path in one process. (Other calls that read the map, like
    // `Env::info` in `Store::map_size_bytes`, take the read guard too; the
    // writer's own `Env::info` runs on this thread, before this call.)
    #[allow(unsafe_code)]
    unsafe {
        env.resize(new_size)
    }
}
