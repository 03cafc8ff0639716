//! c2sp.org/tlog-tiles: tile and entry-bundle paths, tile contents and entry bundles.

use super::merkle::{Hash, MemoryLog};

/// Hashes in a full tile.
pub const TILE_WIDTH: u64 = 256;
/// Tiles are 8 tree levels high.
pub const TILE_HEIGHT: u32 = 8;

/// Why a tile path, tile or bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    /// Not a tile path of the spec's form.
    #[error("malformed tile path: {0}")]
    Path(&'static str),
    /// A tile or bundle whose bytes do not have the expected shape.
    #[error("malformed tile or entry bundle: {0}")]
    Content(&'static str),
}

/// What a tile holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileKind {
    /// Merkle tree hashes at this tile level (0 to 63).
    Hashes(u8),
    /// Log entries (an entry bundle).
    Entries,
}

/// A tile or entry bundle: `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePath {
    /// Hashes of which level, or entries.
    pub kind: TileKind,
    /// The tile's index within its level.
    pub index: u64,
    /// Width of a partial tile (1 to 255); `None` for a full tile.
    pub partial: Option<u8>,
}

/// `1234067` as `x001/x234/067`.
pub fn encode_index(mut n: u64) -> String {
    let mut parts = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        parts.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    parts.reverse();
    parts.join("/")
}

impl TilePath {
    /// The path, relative to the log prefix.
    pub fn to_path(&self) -> String {
        let kind = match self.kind {
            TileKind::Hashes(l) => l.to_string(),
            TileKind::Entries => "entries".to_owned(),
        };
        let mut out = format!("tile/{kind}/{}", encode_index(self.index));
        if let Some(w) = self.partial {
            out.push_str(&format!(".p/{w}"));
        }
        out
    }

    /// Parses a path relative to the log prefix (`tile/...`), in canonical form only.
    pub fn parse(path: &str) -> Result<TilePath, TileError> {
        let rest = path
            .strip_prefix("tile/")
            .ok_or(TileError::Path("must start with tile/"))?;
        let (kind, rest) = rest.split_once('/').ok_or(TileError::Path("no index"))?;
        let kind = if kind == "entries" {
            TileKind::Entries
        } else {
            let l = super::checkpoint::parse_decimal(kind).ok_or(TileError::Path("the level is not a decimal"))?;
            TileKind::Hashes(
                u8::try_from(l)
                    .ok()
                    .filter(|l| *l <= 63)
                    .ok_or(TileError::Path("level above 63"))?,
            )
        };
        let (index, partial) = match rest.split_once(".p/") {
            Some((index, w)) => {
                let w = super::checkpoint::parse_decimal(w).ok_or(TileError::Path("the width is not a decimal"))?;
                let w = u8::try_from(w)
                    .ok()
                    .filter(|w| *w >= 1)
                    .ok_or(TileError::Path("a partial width is 1 to 255"))?;
                (index, Some(w))
            }
            None => (rest, None),
        };
        let parts: Vec<&str> = index.split('/').collect();
        if parts.len() > 7 {
            return Err(TileError::Path("index too long"));
        }
        let mut n: u64 = 0;
        for (i, p) in parts.iter().enumerate() {
            let digits = if i + 1 < parts.len() {
                p.strip_prefix('x')
                    .ok_or(TileError::Path("all but the last element start with x"))?
            } else {
                p
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(TileError::Path("index elements are 3 digits"));
            }
            let d: u64 = digits.parse().map_err(|_| TileError::Path("index element"))?;
            n = n
                .checked_mul(1000)
                .and_then(|n| n.checked_add(d))
                .ok_or(TileError::Path("index overflows"))?;
        }
        let tile = TilePath {
            kind,
            index: n,
            partial,
        };
        if tile.to_path() != path {
            return Err(TileError::Path("not in canonical form (leading x000 elements)"));
        }
        Ok(tile)
    }

    /// How many hashes (or entries) the tile holds.
    pub fn width(&self) -> u64 {
        self.partial.map_or(TILE_WIDTH, u64::from)
    }

    /// The tree height of the hashes of a tile of level `l`.
    fn height(l: u8) -> u32 {
        u32::from(l) * TILE_HEIGHT
    }

    /// The leaves `[start, end)` an entry bundle (or a level 0 tile) holds.
    pub fn leaf_range(&self) -> (u64, u64) {
        let start = self.index.saturating_mul(TILE_WIDTH);
        (start, start.saturating_add(self.width()))
    }

    /// Whether a log of `size` leaves holds all of this tile.
    pub fn exists_in(&self, size: u64) -> bool {
        let level_size = match self.kind {
            TileKind::Hashes(l) => size.checked_shr(Self::height(l)).unwrap_or(0),
            TileKind::Entries => size,
        };
        let (_, end) = self.leaf_range();
        end <= level_size
    }

    /// The tile's hashes from `log`, if the log holds all of them.
    pub fn hashes(&self, log: &MemoryLog) -> Option<Vec<u8>> {
        let TileKind::Hashes(l) = self.kind else {
            return None;
        };
        if !self.exists_in(log.size()) {
            return None;
        }
        let (start, _) = self.leaf_range();
        let h = u8::try_from(Self::height(l)).ok()?;
        let nodes = log.nodes(h, start, usize::try_from(self.width()).ok()?);
        Some(nodes.concat())
    }
}

/// Splits a tile's bytes into `width` hashes.
pub fn decode_hashes(bytes: &[u8], width: u64) -> Result<Vec<Hash>, TileError> {
    if bytes.len() as u64 != width * 32 {
        return Err(TileError::Content("a tile is 32 bytes per hash"));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        })
        .collect())
}

/// Entries as an entry bundle: each a big-endian u16 length, then its bytes.
pub fn encode_bundle<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<u8>, TileError> {
    let mut out = Vec::new();
    for e in entries {
        let len = u16::try_from(e.len()).map_err(|_| TileError::Content("an entry over 65535 bytes"))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Ok(out)
}

/// Parses an entry bundle of exactly `width` entries.
pub fn decode_bundle(mut bytes: &[u8], width: u64) -> Result<Vec<Vec<u8>>, TileError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if out.len() as u64 == width {
            return Err(TileError::Content("more entries than the bundle's width"));
        }
        let [a, b, rest @ ..] = bytes else {
            return Err(TileError::Content("a truncated length"));
        };
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if rest.len() < len {
            return Err(TileError::Content("a truncated entry"));
        }
        out.push(rest[..len].to_vec());
        bytes = &rest[len..];
    }
    if out.len() as u64 != width {
        return Err(TileError::Content("fewer entries than the bundle's width"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::merkle::leaf_hash;

    #[test]
    fn paths_follow_the_spec() {
        assert_eq!(encode_index(1_234_067), "x001/x234/067");
        assert_eq!(encode_index(0), "000");
        for (p, kind, index, partial) in [
            ("tile/0/x001/x234/067", TileKind::Hashes(0), 1_234_067, None),
            ("tile/1/000.p/17", TileKind::Hashes(1), 0, Some(17)),
            ("tile/entries/x002/000.p/255", TileKind::Entries, 2000, Some(255)),
            ("tile/63/999", TileKind::Hashes(63), 999, None),
        ] {
            let t = TilePath::parse(p).expect(p);
            assert_eq!(t, TilePath { kind, index, partial });
            assert_eq!(t.to_path(), p);
        }
        for bad in [
            "tile/64/000",
            "tile/01/000",
            "tile/0/1",
            "tile/0/x000/001",
            "tile/0/001/002",
            "tile/0/001.p/0",
            "tile/0/001.p/256",
            "tile/0/001.p/07",
            "tile/0/",
            "tiles/0/000",
            "tile/entries/x1/000",
            "tile/0/x999/x999/x999/x999/x999/x999/x999/999",
        ] {
            assert!(TilePath::parse(bad).is_err(), "accepted {bad}");
        }
    }

    /// The spec's example: a tree of 70,000 leaves has 273 full level 0 tiles, a partial
    /// one of 112, one full level 1 tile, a partial of 17 and a level 2 partial of 1.
    #[test]
    fn which_tiles_exist_matches_the_spec_example() {
        let size = 70_000;
        let t = |kind, index, partial| TilePath { kind, index, partial }.exists_in(size);
        assert!(t(TileKind::Hashes(0), 272, None));
        assert!(!t(TileKind::Hashes(0), 273, None));
        assert!(t(TileKind::Hashes(0), 273, Some(112)));
        assert!(!t(TileKind::Hashes(0), 273, Some(113)));
        assert!(t(TileKind::Hashes(1), 0, None));
        assert!(t(TileKind::Hashes(1), 1, Some(17)));
        assert!(!t(TileKind::Hashes(1), 1, Some(18)));
        assert!(t(TileKind::Hashes(2), 0, Some(1)));
        assert!(!t(TileKind::Hashes(2), 0, Some(2)));
    }

    #[test]
    fn tiles_hold_the_subtree_hashes() {
        let leaves: Vec<_> = (0..600u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let log = MemoryLog::from_leaves(leaves.iter().copied());
        let t0 = TilePath {
            kind: TileKind::Hashes(0),
            index: 1,
            partial: None,
        };
        let bytes = t0.hashes(&log).expect("full tile");
        assert_eq!(decode_hashes(&bytes, 256).expect("hashes"), leaves[256..512].to_vec());
        // Level 1, partial of 2: the roots of the two full level 0 tiles.
        let t1 = TilePath {
            kind: TileKind::Hashes(1),
            index: 0,
            partial: Some(2),
        };
        let hashes = decode_hashes(&t1.hashes(&log).expect("partial"), 2).expect("hashes");
        assert_eq!(
            hashes[0],
            MemoryLog::from_leaves(leaves[..256].iter().copied())
                .root(256)
                .expect("root")
        );
        assert!(TilePath { partial: Some(3), ..t1 }.hashes(&log).is_none());
    }

    #[test]
    fn bundles_round_trip_and_refuse_bad_lengths() {
        let entries: Vec<Vec<u8>> = vec![b"a".to_vec(), vec![], vec![7; 300]];
        let b = encode_bundle(entries.iter().map(Vec::as_slice)).expect("bundle");
        assert_eq!(decode_bundle(&b, 3).expect("decode"), entries);
        assert!(decode_bundle(&b, 2).is_err());
        assert!(decode_bundle(&b, 4).is_err());
        assert!(decode_bundle(&b[..b.len() - 1], 3).is_err());
        assert!(decode_bundle(&[0], 1).is_err());
        assert!(encode_bundle([vec![0u8; 65_536].as_slice()]).is_err());
    }
}
