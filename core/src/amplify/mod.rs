//! Privacy amplification: finite-key secret length and Toeplitz hashing (issue: privacy
//! amplification). Not yet implemented.
