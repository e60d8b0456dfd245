//! Quasi-cyclic LDPC codes: the base matrix, its text format and the girth of its lifted graph.
//!
//! A QC code is an `rows x cols` base matrix whose entries are either empty or a shift
//! `s < z`; the parity-check matrix `H` replaces each entry by the `z x z` circulant
//! permutation `P^s` (check `i` of block row `r` checks variable `(i + s) mod z` of block
//! column `c`) and each empty entry by zeros. `H` has `n = cols * z` columns and
//! `m = rows * z` rows.
//!
//! The built-in codes live as text files under `core/data/ldpc/`, made by
//! `cargo run --release -p qkd-core --example ldpc_codes` ([`super::construct`] says how); the
//! format is
//!
//! ```text
//! # comment lines
//! qc-ldpc 1 <rows> <cols> <z>
//! <one line per block column: row:shift pairs, rows increasing>
//! ```

use std::fmt::Write as _;

use super::super::ReconcileError;

/// Largest circulant size (shifts and positions stay far inside `u32`).
pub const MAX_Z: u32 = 1 << 16;

/// The checks `r * z + i` of lifted variable `x` of a block column with these
/// `(block row, shift)` entries: `i = (x - s) mod z`.
pub(crate) fn lifted_checks(
    entries: &[(u32, u32)],
    z: usize,
    x: usize,
) -> impl Iterator<Item = usize> + '_ {
    entries
        .iter()
        .map(move |&(r, s)| r as usize * z + (x + z - s as usize) % z)
}

/// The variables `c * z + v` of lifted check `i` of a block row with these
/// `(block column, shift)` entries: `v = (i + s) mod z`.
pub(crate) fn lifted_vars(
    entries: &[(u32, u32)],
    z: usize,
    i: usize,
) -> impl Iterator<Item = usize> + '_ {
    entries
        .iter()
        .map(move |&(c, s)| c as usize * z + (i + s as usize) % z)
}

/// A quasi-cyclic base matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseMatrix {
    z: u32,
    rows: u32,
    /// Per block column: `(block row, shift)`, rows strictly increasing.
    columns: Vec<Vec<(u32, u32)>>,
}

impl BaseMatrix {
    /// A base matrix from its columns, checked: rows in range and strictly increasing in each
    /// column, shifts below `z`, every row and column non-empty.
    pub fn new(z: u32, rows: u32, columns: Vec<Vec<(u32, u32)>>) -> Result<Self, ReconcileError> {
        let bad = |why: String| Err(ReconcileError::BadParams(format!("QC base matrix: {why}")));
        if z == 0 || z > MAX_Z || rows == 0 || columns.is_empty() {
            return bad(format!(
                "z = {z}, {rows} rows, {} columns; expected 1 <= z <= {MAX_Z} and a non-empty matrix",
                columns.len()
            ));
        }
        let mut row_used = vec![false; rows as usize];
        for (c, col) in columns.iter().enumerate() {
            if col.is_empty() {
                return bad(format!("column {c} is empty"));
            }
            for (k, &(r, s)) in col.iter().enumerate() {
                if r >= rows || s >= z {
                    return bad(format!("column {c}: entry {r}:{s} out of range"));
                }
                if k > 0 && col[k - 1].0 >= r {
                    return bad(format!("column {c}: rows must increase"));
                }
                row_used[r as usize] = true;
            }
        }
        if let Some(r) = row_used.iter().position(|&u| !u) {
            return bad(format!("row {r} is empty"));
        }
        Ok(Self { z, rows, columns })
    }

    /// Circulant size.
    pub fn z(&self) -> u32 {
        self.z
    }

    /// Block rows.
    pub fn rows(&self) -> u32 {
        self.rows
    }

    /// Block columns.
    pub fn cols(&self) -> u32 {
        self.columns.len() as u32
    }

    /// Code length `cols * z`.
    pub fn n(&self) -> usize {
        self.columns.len() * self.z as usize
    }

    /// Checks `rows * z`.
    pub fn m(&self) -> usize {
        (self.rows * self.z) as usize
    }

    /// The design rate `1 - m / n`.
    pub fn rate(&self) -> f64 {
        1.0 - self.m() as f64 / self.n() as f64
    }

    /// Per block column, its `(block row, shift)` entries.
    pub fn columns(&self) -> &[Vec<(u32, u32)>] {
        &self.columns
    }

    /// Per block row, its `(block column, shift)` entries, columns increasing.
    pub fn layers(&self) -> Vec<Vec<(u32, u32)>> {
        let mut layers = vec![Vec::new(); self.rows as usize];
        for (c, col) in self.columns.iter().enumerate() {
            for &(r, s) in col {
                layers[r as usize].push((c as u32, s));
            }
        }
        layers
    }

    /// Degree of each block column (= of each of its `z` variables).
    pub fn column_degrees(&self) -> Vec<usize> {
        self.columns.iter().map(Vec::len).collect()
    }

    /// Degree of each block row (= of each of its `z` checks).
    pub fn row_degrees(&self) -> Vec<usize> {
        self.layers().iter().map(Vec::len).collect()
    }

    /// Ones in `H`.
    pub fn edges(&self) -> usize {
        self.columns.iter().map(Vec::len).sum::<usize>() * self.z as usize
    }

    /// The text format (module docs), with `comment` lines first.
    pub fn to_text(&self, comment: &str) -> String {
        let mut out = String::new();
        for line in comment.lines() {
            let _ = writeln!(out, "# {line}");
        }
        let _ = writeln!(
            out,
            "qc-ldpc 1 {} {} {}",
            self.rows,
            self.columns.len(),
            self.z
        );
        for col in &self.columns {
            let entries: Vec<String> = col.iter().map(|(r, s)| format!("{r}:{s}")).collect();
            let _ = writeln!(out, "{}", entries.join(" "));
        }
        out
    }

    /// Parses the text format.
    pub fn from_text(text: &str) -> Result<Self, ReconcileError> {
        let bad = |line: usize, why: &str| {
            ReconcileError::BadParams(format!("QC base matrix, line {}: {why}", line + 1))
        };
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim_start().starts_with('#') && !l.trim().is_empty());
        let (hl, header) = lines.next().ok_or_else(|| bad(0, "no header"))?;
        let fields: Vec<&str> = header.split_whitespace().collect();
        let num = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| bad(hl, "bad number in header"))
        };
        let [magic, version, rows, cols, z] = fields[..] else {
            return Err(bad(hl, "expected 'qc-ldpc 1 <rows> <cols> <z>'"));
        };
        if magic != "qc-ldpc" || version != "1" {
            return Err(bad(hl, "expected 'qc-ldpc 1 <rows> <cols> <z>'"));
        }
        let (rows, cols, z) = (num(rows)?, num(cols)?, num(z)?);
        let mut columns = Vec::with_capacity(cols as usize);
        for (i, line) in lines {
            let mut col = Vec::new();
            for e in line.split_whitespace() {
                let (r, s) = e
                    .split_once(':')
                    .ok_or_else(|| bad(i, "expected row:shift"))?;
                let p = |x: &str| x.parse::<u32>().map_err(|_| bad(i, "bad number"));
                col.push((p(r)?, p(s)?));
            }
            columns.push(col);
        }
        if columns.len() != cols as usize {
            return Err(ReconcileError::BadParams(format!(
                "QC base matrix: header says {cols} columns, found {}",
                columns.len()
            )));
        }
        Self::new(z, rows, columns)
    }

    /// Shortest cycle in the lifted Tanner graph, `None` if it has none, exploring up to cycles
    /// of length `limit` (longer ones are reported as `None`). Every cycle passes through a
    /// variable, and the lift maps variable `(c, x)` onto `(c, 0)` by a graph automorphism, so
    /// breadth-first searches from the `cols` variables `(c, 0)` see every cycle's length.
    pub fn girth(&self, limit: usize) -> Option<usize> {
        let layers = self.layers();
        (0..self.cols())
            .filter_map(|c| self.shortest_cycle_through(&layers, c, limit))
            .min()
    }

    /// Shortest cycle through variable `(c, 0)` of length at most `limit`.
    fn shortest_cycle_through(
        &self,
        layers: &[Vec<(u32, u32)>],
        c: u32,
        limit: usize,
    ) -> Option<usize> {
        let z = self.z as usize;
        let nvar = self.n();
        // Node ids: variables 0..nvar, checks nvar + r * z + i. Each node remembers the
        // first edge out of the root its path took; two different branches meeting close a
        // cycle through the root.
        let total = nvar + self.m();
        let mut dist = vec![u32::MAX; total];
        let mut branch = vec![u32::MAX; total];
        let root = (c as usize) * z;
        dist[root] = 0;
        let mut frontier = vec![root];
        let mut best: Option<usize> = None;
        let mut depth = 0usize;
        while !frontier.is_empty() && 2 * depth < limit {
            let mut next = Vec::new();
            for &u in &frontier {
                let b_u = branch[u];
                let d_u = dist[u] as usize;
                let mut visit = |k: usize, w: usize| {
                    let b = if u == root { k as u32 } else { b_u };
                    if dist[w] == u32::MAX {
                        dist[w] = depth as u32 + 1;
                        branch[w] = b;
                        next.push(w);
                    } else if w != root && branch[w] != b {
                        let len = d_u + dist[w] as usize + 1;
                        best = Some(best.map_or(len, |x| x.min(len)));
                    }
                };
                if u < nvar {
                    for (k, id) in lifted_checks(&self.columns[u / z], z, u % z).enumerate() {
                        visit(k, nvar + id);
                    }
                } else {
                    let (r, i) = ((u - nvar) / z, (u - nvar) % z);
                    for (k, w) in lifted_vars(&layers[r], z, i).enumerate() {
                        visit(k, w);
                    }
                }
            }
            if best.is_some() {
                break;
            }
            frontier = next;
            depth += 1;
        }
        best.filter(|&l| l <= limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_errors() {
        let m =
            BaseMatrix::new(5, 2, vec![vec![(0, 1), (1, 4)], vec![(0, 0)], vec![(1, 2)]]).unwrap();
        let text = m.to_text("made by hand\nsecond line");
        assert!(text.starts_with("# made by hand\n# second line\nqc-ldpc 1 2 3 5\n"));
        assert_eq!(BaseMatrix::from_text(&text).unwrap(), m);
        assert_eq!((m.n(), m.m(), m.edges()), (15, 10, 20));
        assert_eq!(m.row_degrees(), vec![2, 2]);
        for bad in [
            "",
            "qc-ldpc 2 1 1 5\n0:0\n",
            "qc-ldpc 1 1 2 5\n0:0\n",
            "qc-ldpc 1 1 1 5\n0:5\n",
            "qc-ldpc 1 2 1 5\n0:0\n",
            "qc-ldpc 1 2 1 5\n1:0 0:0\n",
            "qc-ldpc 1 1 1 5\n0-0\n",
            "qc-ldpc 1 1 1 0\n0:0\n",
        ] {
            assert!(BaseMatrix::from_text(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn girth_of_small_lifts() {
        // Two columns on the same two rows with equal shift differences: 4-cycles.
        let four = BaseMatrix::new(7, 2, vec![vec![(0, 0), (1, 0)], vec![(0, 1), (1, 1)]]);
        assert_eq!(four.unwrap().girth(20), Some(4));
        // Shift differences 0 and 1 on a circulant of 7: the shortest cycle closes when the
        // alternating shift sum vanishes mod 7, after 7 steps around: length 2 * 2 * 7.
        let long = BaseMatrix::new(7, 2, vec![vec![(0, 0), (1, 0)], vec![(0, 0), (1, 1)]]);
        assert_eq!(long.clone().unwrap().girth(40), Some(28));
        assert_eq!(long.unwrap().girth(20), None);
        // A tree: one column.
        let tree = BaseMatrix::new(3, 2, vec![vec![(0, 0), (1, 2)]]).unwrap();
        assert_eq!(tree.girth(50), None);
    }
}
