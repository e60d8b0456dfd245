//! Writes the built-in QC-LDPC codes to `core/data/ldpc/` (the construction is documented in
//! `qkd_core::reconcile::ldpc::construct`): every shape of `codes::BASE_ROWS` x `codes::LIFTS`,
//! or only the lifts given as arguments.
//!
//! ```text
//! cargo run --release -p qkd-core --example ldpc_codes [Z ...]
//! ```

use std::path::Path;
use std::time::Instant;

use qkd_core::reconcile::ldpc::codes::{BASE_COLUMNS, BASE_ROWS, EXCLUDED, LIFTS, file_name};
use qkd_core::reconcile::ldpc::construct::{Profile, SEED, TARGET_GIRTH, build};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lifts: Vec<u32> = match std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<Vec<u32>, _>>()?
    {
        v if v.is_empty() => LIFTS.to_vec(),
        v => v,
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/ldpc");
    std::fs::create_dir_all(&dir)?;
    for &z in &lifts {
        for &rows in BASE_ROWS.iter().filter(|&&r| !EXCLUDED.contains(&(r, z))) {
            let t = Instant::now();
            let profile = Profile::for_shape(rows, BASE_COLUMNS);
            let base = build(&profile, z)?;
            let girth = base.girth(TARGET_GIRTH);
            let comment = format!(
                "QC-LDPC mother code, rate {:.4}: {rows} x {BASE_COLUMNS} base matrix, circulant z = {z}, n = {}.\n\
                 Made by `cargo run --release -p qkd-core --example ldpc_codes {z}`: QC-PEG placement\n\
                 (qkd_core::reconcile::ldpc::construct), seed {SEED:#x}. Girth {}.",
                base.rate(),
                base.n(),
                girth.map_or(format!("at least {TARGET_GIRTH}"), |g| g.to_string()),
            );
            std::fs::write(dir.join(file_name(rows, z)), base.to_text(&comment))?;
            println!(
                "rows {rows:3} z {z:3}: girth {girth:?}, check degrees {:?}..{:?}, {:.2} s",
                base.row_degrees().iter().min(),
                base.row_degrees().iter().max(),
                t.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
