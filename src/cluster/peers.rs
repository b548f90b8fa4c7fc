//! The peer table: each (node, core) of another node this node has seen a
//! socket of gets a virtual core number, past this node's own cores, that
//! this node's rooms keep in their members' `ConnRef`s. Only the gateway
//! reads it; entries stay for the life of the process (a node that comes
//! back under its name gets its numbers again), at most `MAX_PEERS`.

use super::MAX_PEERS;
use std::collections::HashMap;
use std::sync::Arc;

pub(super) struct Peers {
    /// This node's cores: virtual numbers start there.
    base: u16,
    entries: Vec<(Arc<str>, u16)>,
    /// Each node's (core, number) pairs: looked up by `&str`, no allocation.
    numbers: HashMap<Arc<str>, Vec<(u16, u16)>>,
}

impl Peers {
    pub fn new(cores: usize) -> Peers {
        Peers { base: cores as u16, entries: Vec::new(), numbers: HashMap::new() }
    }

    /// The virtual core of `core` of `node`; none once the table is full.
    pub fn number(&mut self, node: &str, core: u16) -> Option<u16> {
        if let Some(&(_, n)) = self.numbers.get(node).and_then(|pairs| pairs.iter().find(|(c, _)| *c == core)) {
            return Some(n);
        }
        if self.entries.len() >= MAX_PEERS {
            return None;
        }
        let node: Arc<str> = node.into();
        let n = self.base + self.entries.len() as u16;
        self.entries.push((node.clone(), core));
        self.numbers.entry(node).or_default().push((core, n));
        Some(n)
    }

    /// The virtual cores of `node`.
    pub fn of(&self, node: &str) -> Vec<u16> {
        self.numbers.get(node).map_or_else(Vec::new, |pairs| pairs.iter().map(|&(_, n)| n).collect())
    }

    /// The node and core a virtual core stands for.
    pub fn get(&self, virtual_core: u16) -> Option<(&Arc<str>, u16)> {
        let at = virtual_core.checked_sub(self.base)?;
        self.entries.get(usize::from(at)).map(|(node, core)| (node, *core))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_start_past_the_cores_and_name_one_pair_each() {
        let mut peers = Peers::new(2);
        let a0 = peers.number("a", 0).unwrap();
        assert_eq!(a0, 2);
        assert_eq!(peers.number("a", 0), Some(a0));
        let b0 = peers.number("b", 0).unwrap();
        assert_ne!(a0, b0);
        assert_eq!(peers.get(b0).map(|(n, c)| (n.to_string(), c)), Some(("b".into(), 0)));
        assert!(peers.get(1).is_none(), "a real core is no peer");
        assert!(peers.get(99).is_none());
        let a1 = peers.number("a", 1).unwrap();
        assert_eq!(peers.of("a"), vec![a0, a1]);
        assert!(peers.of("z").is_empty());
    }
}
