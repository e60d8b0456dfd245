//! The built-in codes: which shapes exist and their data files.

use std::sync::OnceLock;

use super::code::BaseMatrix;
use super::decoder::Graph;
use crate::reconcile::ReconcileError;

/// Block columns of every built-in base matrix.
pub const BASE_COLUMNS: u32 = 200;

/// Block rows of the built-in mother codes, lowest rate first: rates
/// `1 - rows / 200` from 0.5 to 0.95, `1 - R` shrinking by about 0.8 per step.
pub const BASE_ROWS: [u32; 11] = [100, 80, 64, 50, 40, 32, 25, 20, 16, 13, 10];

/// Circulant sizes: frames of 4800, 12 800, 51 200 and 102 400 bits.
pub const LIFTS: [u32; 4] = [24, 64, 256, 512];

/// Shapes of `BASE_ROWS x LIFTS` that are not built in: their circulants are too small for the
/// placement to avoid 4-cycles.
pub const EXCLUDED: [(u32, u32); 4] = [(16, 24), (13, 24), (10, 24), (10, 64)];

/// The file name of a shape under `core/data/ldpc/`.
pub fn file_name(rows: u32, z: u32) -> String {
    format!("r{rows}_z{z}.qc")
}

macro_rules! code_files {
    ($(($rows:literal, $z:literal)),* $(,)?) => {
        &[$(($rows, $z, include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"), "/data/ldpc/r", stringify!($rows), "_z", stringify!($z), ".qc"
        )))),*]
    };
}

/// `(rows, z, text)` of every built-in code (every shape but [`EXCLUDED`]).
static FILES: &[(u32, u32, &str)] = code_files![
    (100, 24),
    (80, 24),
    (64, 24),
    (50, 24),
    (40, 24),
    (32, 24),
    (25, 24),
    (20, 24),
    (100, 64),
    (80, 64),
    (64, 64),
    (50, 64),
    (40, 64),
    (32, 64),
    (25, 64),
    (20, 64),
    (16, 64),
    (13, 64),
    (100, 256),
    (80, 256),
    (64, 256),
    (50, 256),
    (40, 256),
    (32, 256),
    (25, 256),
    (20, 256),
    (16, 256),
    (13, 256),
    (10, 256),
    (100, 512),
    (80, 512),
    (64, 512),
    (50, 512),
    (40, 512),
    (32, 512),
    (25, 512),
    (20, 512),
    (16, 512),
    (13, 512),
    (10, 512),
];

/// `(rows, z)` of every built-in code.
pub fn shapes() -> impl Iterator<Item = (u32, u32)> {
    FILES.iter().map(|&(r, z, _)| (r, z))
}

/// A built-in code, parsed once.
#[derive(Debug)]
pub struct BuiltinCode {
    /// The base matrix.
    pub base: BaseMatrix,
    /// Its decoder graph.
    pub graph: Graph,
}

/// The built-in code of `rows` block rows and circulant `z`.
pub fn builtin(rows: u32, z: u32) -> Result<&'static BuiltinCode, ReconcileError> {
    static CACHE: OnceLock<Vec<OnceLock<Result<BuiltinCode, ReconcileError>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| FILES.iter().map(|_| OnceLock::new()).collect());
    let i = FILES
        .iter()
        .position(|&(r, zz, _)| r == rows && zz == z)
        .ok_or_else(|| {
            ReconcileError::BadParams(format!(
                "no built-in LDPC code with {rows} rows and z = {z}"
            ))
        })?;
    cache[i]
        .get_or_init(|| {
            let base = BaseMatrix::from_text(FILES[i].2)?;
            let graph = Graph::new(&base)?;
            Ok(BuiltinCode { base, graph })
        })
        .as_ref()
        .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::ldpc::construct::{Profile, build};

    #[test]
    fn builtin_codes_have_their_profile_and_girth() {
        assert_eq!(
            shapes().count(),
            BASE_ROWS.len() * LIFTS.len() - EXCLUDED.len()
        );
        for (rows, z) in shapes() {
            let code = builtin(rows, z).unwrap();
            let base = &code.base;
            assert_eq!(
                (base.rows(), base.cols(), base.z()),
                (rows, BASE_COLUMNS, z)
            );
            let profile = Profile::for_shape(rows, BASE_COLUMNS);
            let mut want = profile.column_degrees();
            let mut got = base.column_degrees();
            want.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, want, "rows {rows} z {z}: column degrees");
            let r = base.row_degrees();
            let (lo, hi) = (r.iter().min().unwrap(), r.iter().max().unwrap());
            assert!(hi - lo <= 2, "rows {rows} z {z}: check degrees {lo}..{hi}");
            let girth = base.girth(8);
            assert!(
                girth.is_none_or(|g| g >= 6),
                "rows {rows} z {z}: girth {girth:?}"
            );
            if z >= 512 && rows >= 32 {
                assert!(
                    base.girth(7).is_none(),
                    "rows {rows} z {z}: girth {girth:?} below 8"
                );
            }
        }
    }

    #[test]
    fn small_builtin_codes_regenerate_bit_for_bit() {
        for (rows, z) in shapes().filter(|&(_, z)| z <= 64) {
            let built = build(&Profile::for_shape(rows, BASE_COLUMNS), z).unwrap();
            assert_eq!(&built, &builtin(rows, z).unwrap().base, "rows {rows} z {z}");
        }
        assert!(builtin(10, 24).is_err());
    }
}
