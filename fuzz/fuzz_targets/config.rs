//! The config loader on arbitrary text: no panic; a config it accepts is
//! one the server can start from (validated values only).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = dormouse::Config::from_toml(text) {
        assert!(config.core_count() >= 1);
        assert!(config.limits.max_message_bytes > 0);
    }
});
