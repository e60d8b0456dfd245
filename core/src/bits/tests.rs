use super::kernels::{Backend, Kernels};
use super::*;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn random_block(rng: &mut ChaCha20Rng, len: usize) -> BitBlock {
    let words: Vec<u64> = (0..words_for(len)).map(|_| rng.next_u64()).collect();
    BitBlock::from_words(words, len).unwrap()
}

/// Bit-by-bit reference for parity, XOR and Hamming distance.
fn naive_parity(b: &BitBlock, r: Range<usize>) -> bool {
    r.fold(false, |acc, i| acc ^ b.get(i).unwrap())
}

#[test]
fn bit_order_is_lsb_first_in_bytes_and_words() {
    // Byte 0x01 is bit 0; byte 0x80 at index 1 is bit 15.
    let b = BitBlock::from_bytes(&[0x01, 0x80], 16).unwrap();
    assert_eq!(b.words(), &[0x8001]);
    assert!(b.get(0).unwrap());
    assert!(b.get(15).unwrap());
    assert_eq!(b.count_ones(), 2);
    assert_eq!(&b.to_bytes()[..], &[0x01, 0x80]);
}

#[test]
fn tail_bits_are_cleared_everywhere() {
    let b = BitBlock::from_bytes(&[0xff, 0xff], 11).unwrap();
    assert_eq!(b.words(), &[0x7ff]);
    assert_eq!(&b.to_bytes()[..], &[0xff, 0x07]);
    let w = BitBlock::from_words(vec![u64::MAX, u64::MAX, 7], 70).unwrap();
    assert_eq!(w.words(), &[u64::MAX, 0x3f]);
    let mut m = BitBlock::zeros(3);
    m.with_words_mut(|w| w[0] = u64::MAX);
    assert_eq!(m.count_ones(), 3);
}

#[test]
fn get_set_flip_and_bounds() {
    let mut b = BitBlock::zeros(100);
    b.set(99, true).unwrap();
    b.flip(64).unwrap();
    b.flip(64).unwrap();
    b.flip(3).unwrap();
    assert_eq!(b.count_ones(), 2);
    assert!(b.get(99).unwrap() && b.get(3).unwrap() && !b.get(64).unwrap());
    assert_eq!(
        b.get(100),
        Err(BitsError::PositionOutOfRange {
            position: 100,
            len: 100
        })
    );
    assert!(b.set(100, true).is_err());
    assert!(b.flip(1000).is_err());
    assert!(BitBlock::from_bytes(&[0], 9).is_err());
}

#[test]
fn debug_prints_length_only() {
    let b = BitBlock::from_bytes(&[0xAB, 0xCD], 16).unwrap();
    let s = format!("{b:?}");
    assert!(s.contains("16"), "{s}");
    assert!(
        !s.contains("ab") && !s.contains("AB") && !s.contains("171"),
        "{s}"
    );
}

#[test]
fn parity_matches_bit_by_bit_on_many_ranges() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let b = random_block(&mut rng, 1000);
    for _ in 0..2000 {
        let a = (rng.next_u32() % 1001) as usize;
        let c = (rng.next_u32() % 1001) as usize;
        let (s, e) = (a.min(c), a.max(c));
        assert_eq!(b.parity(s..e).unwrap(), naive_parity(&b, s..e), "{s}..{e}");
    }
    assert_eq!(b.parity_all(), naive_parity(&b, 0..1000));
    assert!(b.parity(5..1001).is_err());
    #[allow(clippy::reversed_empty_ranges)]
    let rev = b.parity(10..5);
    assert!(rev.is_err());
}

#[test]
fn xor_and_hamming() {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let a = random_block(&mut rng, 777);
    let b = random_block(&mut rng, 777);
    let x = a.xor(&b).unwrap();
    let naive = (0..777)
        .filter(|&i| a.get(i).unwrap() != b.get(i).unwrap())
        .count();
    assert_eq!(x.count_ones(), naive);
    assert_eq!(a.hamming_distance(&b).unwrap(), naive);
    for i in 0..777 {
        assert_eq!(x.get(i).unwrap(), a.get(i).unwrap() ^ b.get(i).unwrap());
    }
    let short = BitBlock::zeros(5);
    assert_eq!(
        a.hamming_distance(&short),
        Err(BitsError::LengthMismatch {
            left: 777,
            right: 5
        })
    );
}

#[test]
fn slice_extend_extract_and_remove() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let a = random_block(&mut rng, 300);
    for (s, e) in [
        (0, 300),
        (1, 299),
        (63, 65),
        (64, 128),
        (100, 100),
        (7, 250),
    ] {
        let sl = a.slice(s..e).unwrap();
        assert_eq!(sl.len(), e - s);
        assert_eq!(sl.to_bools(), a.to_bools()[s..e].to_vec());
    }
    let mut joined = a.slice(0..37).unwrap();
    joined.extend_from(&a.slice(37..300).unwrap());
    assert_eq!(joined, a);

    let pos = [5usize, 299, 0, 64, 5];
    let ex = a.extract(&pos).unwrap();
    assert_eq!(
        ex.to_bools(),
        pos.iter().map(|&p| a.get(p).unwrap()).collect::<Vec<_>>()
    );
    assert!(a.extract(&[300]).is_err());

    let rest = a.without_positions(&pos).unwrap();
    assert_eq!(rest.len(), 296);
    let expect: Vec<bool> = (0..300)
        .filter(|p| !pos.contains(p))
        .map(|p| a.get(p).unwrap())
        .collect();
    assert_eq!(rest.to_bools(), expect);
}

#[test]
fn permutation_checks_and_inverse() {
    assert!(Permutation::new(vec![0, 2, 1]).is_ok());
    assert!(matches!(
        Permutation::new(vec![0, 0, 1]),
        Err(BitsError::NotAPermutation { .. })
    ));
    assert!(matches!(
        Permutation::new(vec![0, 3, 1]),
        Err(BitsError::NotAPermutation { .. })
    ));
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let p = Permutation::shuffled(500, |k| rng.next_u32() % k);
    assert!(Permutation::new(p.as_slice().to_vec()).is_ok());
    let a = random_block(&mut rng, 500);
    let b = a.permuted(&p).unwrap();
    for i in 0..500 {
        assert_eq!(b.get(i).unwrap(), a.get(p.as_slice()[i] as usize).unwrap());
    }
    assert_eq!(b.permuted(&p.inverse()).unwrap(), a);
    assert!(a.permuted(&Permutation::identity(3)).is_err());
}

#[test]
fn every_supported_backend_matches_portable() {
    let portable = Kernels::new(Backend::Portable).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let mut tested = 0;
    for backend in Backend::ALL {
        let Some(k) = Kernels::new(backend) else {
            continue;
        };
        tested += 1;
        for len in [0usize, 1, 3, 4, 7, 8, 9, 31, 64, 65, 1000, 4099] {
            let a: Vec<u64> = (0..len).map(|_| rng.next_u64()).collect();
            let b: Vec<u64> = (0..len).map(|_| rng.next_u64()).collect();
            assert_eq!(
                k.popcount(&a),
                portable.popcount(&a),
                "{backend:?} popcount {len}"
            );
            assert_eq!(
                k.xor_fold(&a),
                portable.xor_fold(&a),
                "{backend:?} fold {len}"
            );
            assert_eq!(k.xor_popcount(&a, &b), portable.xor_popcount(&a, &b));
            let (mut x1, mut x2) = (a.clone(), a.clone());
            k.xor_into(&mut x1, &b);
            portable.xor_into(&mut x2, &b);
            assert_eq!(x1, x2, "{backend:?} xor {len}");
            // The portable popcount itself against a bit loop.
            let naive: u64 = a
                .iter()
                .map(|w| (0..64).filter(|i| w >> i & 1 == 1).count() as u64)
                .sum();
            assert_eq!(portable.popcount(&a), naive);
            for (s, e) in [
                (0usize, len * 64),
                (3, len * 64 / 2 + 1),
                (len * 13, len * 50),
            ] {
                if s <= e {
                    assert_eq!(
                        range_parity(&k, &a, s, e),
                        range_parity(&portable, &a, s, e)
                    );
                }
            }
        }
    }
    assert!(tested >= 1);
    assert!(Backend::Portable.is_supported());
}

#[test]
fn ones_lists_the_set_positions_in_order() {
    let mut rng = ChaCha20Rng::seed_from_u64(41);
    for len in [0, 1, 63, 64, 65, 1000] {
        let b = random_block(&mut rng, len);
        let want: Vec<usize> = (0..len).filter(|&i| b.get(i).unwrap()).collect();
        assert_eq!(b.ones().collect::<Vec<_>>(), want, "len {len}");
    }
    let mut full = BitBlock::zeros(130);
    (0..130).for_each(|i| full.set(i, true).unwrap());
    assert_eq!(full.ones().count(), 130);
}

#[test]
fn xor_bit_range_matches_a_bit_loop() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    for _ in 0..400 {
        let (src_len, dst_len) = (rng.random_range(1..400), rng.random_range(1..400));
        let src = random_block(&mut rng, src_len);
        let dst = random_block(&mut rng, dst_len);
        let len = rng.random_range(0..=src_len.min(dst_len));
        let from = rng.random_range(0..=src_len - len);
        let at = rng.random_range(0..=dst_len - len);
        let mut want = dst.clone();
        for i in 0..len {
            want.set(at + i, dst.bit(at + i) ^ src.bit(from + i))
                .unwrap();
        }
        let mut got = dst.words().to_vec();
        xor_bit_range(&mut got, at, src.words(), from, len);
        assert_eq!(got, want.words(), "from {from} at {at} len {len}");
    }
}
