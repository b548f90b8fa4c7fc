//! The store's limits, in one struct with documented defaults, and the checks
//! that enforce them, which the server calls before it builds a batch so that
//! a peer's oversized key is refused with a message naming the limit.

use crate::StoreError;

/// Tunables of a [`crate::Store`]. Every limit has a default and a reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Initial size of the LMDB memory map. Default 1 GiB: address space is
    /// cheap and the file only grows as pages are written. The writer doubles
    /// the map whenever a commit reports that it is full, so this is a
    /// starting point, not a cap.
    pub map_size_bytes: usize,
    /// Longest storage key. Default 2048 bytes, as Durable Objects. Keys
    /// longer than LMDB's own limit are supported (see the crate's layout).
    pub max_key_bytes: usize,
    /// Longest storage value. Default 128 KiB, as Durable Objects: bounds
    /// what one peer can make the server hold per key.
    pub max_value_bytes: usize,
    /// Most keys in one get-many, put-many or delete-many call. Default 128,
    /// as Durable Objects. Checked by [`check_batch_len`]; a [`crate::Batch`]
    /// may gather several such calls.
    pub max_batch_keys: usize,
    /// Capacity of the queue to the writer thread, in batches. Default 1024:
    /// enough for a full group commit to wait while the previous one syncs;
    /// beyond it, `submit` blocks and `try_submit` hands the batch back.
    pub queue_capacity: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            map_size_bytes: 1 << 30,
            max_key_bytes: 2048,
            max_value_bytes: 128 * 1024,
            max_batch_keys: 128,
            queue_capacity: 1024,
        }
    }
}

impl StoreConfig {
    /// Refuses configurations the store cannot work with.
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        let positive = [
            ("map_size_bytes", self.map_size_bytes),
            ("max_batch_keys", self.max_batch_keys),
            ("queue_capacity", self.queue_capacity),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(StoreError::InvalidConfig(format!("{name} must be positive")));
            }
        }
        // Bucket entries record lengths as u32.
        if u32::try_from(self.max_key_bytes).is_err() || u32::try_from(self.max_value_bytes).is_err() {
            return Err(StoreError::InvalidConfig("max_key_bytes and max_value_bytes must fit in 32 bits".into()));
        }
        Ok(())
    }
}

/// Refuses a storage key longer than [`StoreConfig::max_key_bytes`].
pub fn check_key(config: &StoreConfig, key: &[u8]) -> Result<(), StoreError> {
    if key.len() > config.max_key_bytes {
        return Err(StoreError::KeyTooLarge { len: key.len(), max: config.max_key_bytes });
    }
    Ok(())
}

/// Refuses a storage value longer than [`StoreConfig::max_value_bytes`].
pub fn check_value(config: &StoreConfig, value: &[u8]) -> Result<(), StoreError> {
    if value.len() > config.max_value_bytes {
        return Err(StoreError::ValueTooLarge { len: value.len(), max: config.max_value_bytes });
    }
    Ok(())
}

/// Refuses a get-many, put-many or delete-many call naming more than
/// [`StoreConfig::max_batch_keys`] keys.
pub fn check_batch_len(config: &StoreConfig, keys: usize) -> Result<(), StoreError> {
    if keys > config.max_batch_keys {
        return Err(StoreError::TooManyKeys { len: keys, max: config.max_batch_keys });
    }
    Ok(())
}

/// Which of a room's keys a [`crate::Store::list`] returns, and in what order.
///
/// The result is the intersection of every bound given: keys that start with
/// `prefix`, are at least `start` and less than `end`, in ascending order (or
/// descending with `reverse`), at most `limit` of them counted from the first
/// in that order. The default lists everything in ascending order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only keys starting with these bytes.
    pub prefix: Option<Vec<u8>>,
    /// Only keys greater than or equal to this one.
    pub start: Option<Vec<u8>>,
    /// Only keys strictly less than this one.
    pub end: Option<Vec<u8>>,
    /// Largest key first.
    pub reverse: bool,
    /// At most this many entries.
    pub limit: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_accept_at_the_limit_and_refuse_one_past_it() {
        let config = StoreConfig::default();

        check_key(&config, &vec![b'k'; 2048]).expect("a key at the limit is accepted");
        let error = check_key(&config, &vec![b'k'; 2049]).expect_err("a key past the limit is refused");
        assert!(matches!(error, StoreError::KeyTooLarge { len: 2049, max: 2048 }));
        let message = error.to_string();
        assert!(message.contains("2048") && message.contains("max_key_bytes"), "{message}");

        check_value(&config, &vec![0; 128 * 1024]).expect("a value at the limit is accepted");
        let error = check_value(&config, &vec![0; 128 * 1024 + 1]).expect_err("past the limit");
        assert!(matches!(error, StoreError::ValueTooLarge { len: 131073, max: 131072 }));
        let message = error.to_string();
        assert!(message.contains("131072") && message.contains("max_value_bytes"), "{message}");

        check_batch_len(&config, 128).expect("128 keys are accepted");
        let error = check_batch_len(&config, 129).expect_err("129 keys are refused");
        assert!(matches!(error, StoreError::TooManyKeys { len: 129, max: 128 }));
        let message = error.to_string();
        assert!(message.contains("128") && message.contains("max_batch_keys"), "{message}");
    }

    #[test]
    fn limits_follow_the_config() {
        let config = StoreConfig { max_key_bytes: 3, max_value_bytes: 0, max_batch_keys: 1, ..Default::default() };
        check_key(&config, b"abc").expect("at the limit");
        assert!(check_key(&config, b"abcd").is_err());
        check_value(&config, b"").expect("an empty value is always accepted");
        assert!(check_value(&config, b"x").is_err());
        check_batch_len(&config, 1).expect("at the limit");
        assert!(check_batch_len(&config, 2).is_err());
    }

    #[test]
    fn invalid_configs_are_refused() {
        for config in [
            StoreConfig { map_size_bytes: 0, ..Default::default() },
            StoreConfig { queue_capacity: 0, ..Default::default() },
            StoreConfig { max_batch_keys: 0, ..Default::default() },
        ] {
            assert!(matches!(config.validate(), Err(StoreError::InvalidConfig(_))), "{config:?}");
        }
        StoreConfig::default().validate().expect("the default config is valid");
    }
}
