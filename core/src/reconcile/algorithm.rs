//! The reconciliation algorithm a link or a pipeline runs, chosen by name: a Cascade variant
//! ([`Variant::by_name`]) or LDPC ([`LdpcParams::parse`]: `ldpc-blind[:F_START:F_END]`,
//! `ldpc-oneway[:F]`).

use super::ReconcileError;
use super::cascade::Variant;
use super::ldpc::codes::LIFTS;
use super::ldpc::protocol::{FramePlan, LdpcParams};

/// What reconciles a block's frames.
#[derive(Debug, Clone, PartialEq)]
pub enum Algorithm {
    /// Cascade, interactive, with this variant's block sizes.
    Cascade(Variant),
    /// LDPC syndromes, one-way or blind.
    Ldpc(LdpcParams),
}

impl Algorithm {
    /// The algorithm called `name`. `frame_bits` sizes LDPC frames: the largest built-in code
    /// whose key part fits in it (0: the largest code); a frame smaller than every code's is an
    /// error. Cascade takes any frame size.
    pub fn parse(name: &str, frame_bits: usize) -> Result<Self, ReconcileError> {
        if let Some(v) = Variant::by_name(name) {
            return Ok(Self::Cascade(v));
        }
        let Some(params) = LdpcParams::parse(name, LIFTS[0]) else {
            return Err(ReconcileError::BadParams(format!(
                "unknown algorithm '{name}'; known: {}",
                Self::names()
            )));
        };
        let limit = if frame_bits == 0 {
            usize::MAX
        } else {
            frame_bits
        };
        let z = ldpc_lift_for(limit).ok_or_else(|| {
            ReconcileError::BadParams(format!(
                "frames of {frame_bits} bits are smaller than the smallest LDPC frame ({} bits)",
                FramePlan::key_bits_for(LIFTS[0])
            ))
        })?;
        Ok(Self::Ldpc(LdpcParams { z, ..params? }))
    }

    /// Every name [`Algorithm::parse`] accepts, for help texts and errors.
    pub fn names() -> String {
        let mut names: Vec<String> = Variant::all()
            .into_iter()
            .map(|v| v.name.to_string())
            .collect();
        names.extend(LdpcParams::NAME_FORMS.iter().map(|n| n.to_string()));
        names.join(", ")
    }

    /// Key bits of one frame when the algorithm fixes them (LDPC), `None` for Cascade.
    pub fn fixed_frame_bits(&self) -> Option<usize> {
        match self {
            Self::Cascade(_) => None,
            Self::Ldpc(p) => Some(FramePlan::key_bits_for(p.z)),
        }
    }
}

/// The largest built-in lift whose frame's key part is at most `bits`.
pub fn ldpc_lift_for(bits: usize) -> Option<u32> {
    LIFTS
        .iter()
        .rev()
        .copied()
        .find(|&z| FramePlan::key_bits_for(z) <= bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_to_their_algorithm_and_frame() {
        assert!(matches!(
            Algorithm::parse("yanetal", 0),
            Ok(Algorithm::Cascade(v)) if v.name == "yanetal"
        ));
        let Ok(Algorithm::Ldpc(p)) = Algorithm::parse("ldpc-blind:1.2:1.6", 0) else {
            panic!("blind LDPC with its efficiencies")
        };
        assert_eq!((p.z, p.f_start, p.f_end, p.rounds), (512, 1.2, 1.6, 3));
        // 65536-bit frames hold the z = 256 code's 46080 key bits, not z = 512's 92160.
        let Ok(Algorithm::Ldpc(p)) = Algorithm::parse("ldpc-oneway", 65536) else {
            panic!("one-way LDPC")
        };
        assert_eq!((p.z, p.f_start, p.rounds), (256, 1.5, 0));
        assert_eq!(
            Algorithm::parse("ldpc", 92160).unwrap().fixed_frame_bits(),
            Some(92160)
        );
        for (name, frame, says) in [
            ("ldpc", 4000, "smallest LDPC frame (4320 bits)"),
            ("ldpc-oneway:x", 0, "ldpc-oneway[:F]"),
            ("ldpc-blind:1.2", 0, "ldpc-blind[:F_START:F_END]"),
            ("cascade", 0, "known: original"),
        ] {
            let e = Algorithm::parse(name, frame).unwrap_err().to_string();
            assert!(e.contains(says), "{name}: {e}");
        }
    }
}
