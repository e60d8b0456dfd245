//! The built-in codes: which shapes exist and their data files.

use std::sync::OnceLock;

use super::code::BaseMatrix;
use super::decoder::Graph;
use crate::reconcile::ReconcileError;

/// Block columns of every built-in base matrix.
pub const BASE_COLUMNS: u32 = 200;

/// Block rows of the built-in mother codes, lowest rate first: rates `1 - rows / 200` from 0.5
/// to 0.95, `1 - R` shrinking by about 0.9 per step, so that no rate is more than 11 % of a
/// syndrome above a mother's and rate adaption punctures little: puncturing costs efficiency
/// (one-way at QBER 2 %, frames of 92 160 bits: the rate-0.84 mother with 90 bits punctured
/// decoded 24 of 24 frames at f = 1.25, the rate-0.8 one with 3534 punctured 22 of 24 at
/// f = 1.3). With steps of 0.8 the one-way default needed f = 1.5.
pub const BASE_ROWS: [u32; 21] = [
    100, 89, 80, 72, 64, 57, 50, 45, 40, 36, 32, 28, 25, 22, 20, 18, 16, 14, 13, 11, 10,
];

/// Circulant sizes: frames of 4800, 12 800, 51 200 and 102 400 bits.
pub const LIFTS: [u32; 4] = [24, 64, 256, 512];

/// Shapes of `BASE_ROWS x LIFTS` that are not built in: their circulants are too small for the
/// placement to avoid 4-cycles.
pub const EXCLUDED: [(u32, u32); 8] = [
    (18, 24),
    (16, 24),
    (14, 24),
    (13, 24),
    (11, 24),
    (10, 24),
    (11, 64),
    (10, 64),
];

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
    (89, 24),
    (80, 24),
    (72, 24),
    (64, 24),
    (57, 24),
    (50, 24),
    (45, 24),
    (40, 24),
    (36, 24),
    (32, 24),
    (28, 24),
    (25, 24),
    (22, 24),
    (20, 24),
    (100, 64),
    (89, 64),
    (80, 64),
    (72, 64),
    (64, 64),
    (57, 64),
    (50, 64),
    (45, 64),
    (40, 64),
    (36, 64),
    (32, 64),
    (28, 64),
    (25, 64),
    (22, 64),
    (20, 64),
    (18, 64),
    (16, 64),
    (14, 64),
    (13, 64),
    (100, 256),
    (89, 256),
    (80, 256),
    (72, 256),
    (64, 256),
    (57, 256),
    (50, 256),
    (45, 256),
    (40, 256),
    (36, 256),
    (32, 256),
    (28, 256),
    (25, 256),
    (22, 256),
    (20, 256),
    (18, 256),
    (16, 256),
    (14, 256),
    (13, 256),
    (11, 256),
    (10, 256),
    (100, 512),
    (89, 512),
    (80, 512),
    (72, 512),
    (64, 512),
    (57, 512),
    (50, 512),
    (45, 512),
    (40, 512),
    (36, 512),
    (32, 512),
    (28, 512),
    (25, 512),
    (22, 512),
    (20, 512),
    (18, 512),
    (16, 512),
    (14, 512),
    (13, 512),
    (11, 512),
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
