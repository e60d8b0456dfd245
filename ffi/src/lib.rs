//! libqkd: the C API of the qkd engine (`libqkd.so`, `libqkd.a`, header `include/qkd.h`).
//!
//! A thin translation layer over `qkd-core` in the style of rustls-ffi: opaque tagged handles
//! with `_new`/`_free` ([`handle`]), a stable [`qkd_result`] code from every fallible function,
//! outputs through out-parameters with explicit lengths, NULL checks everywhere, and a panic
//! boundary around every exported body ([`result::guard`]). No algorithm lives here.
//!
//! The header is generated with a pinned cbindgen (`cargo run -p qkd-ffi-gen-header`); its
//! preamble (in `ffi/cbindgen.toml`) states the conventions, ownership and threading rules.
//! `docs/c-guide.md` is the guide for C users.
#![deny(missing_docs)]
#![allow(non_camel_case_types)]

mod amplify;
mod block;
mod buffer;
mod cascade;
mod confirm;
mod entropy;
mod estimate;
mod handle;
mod pipeline;
mod result;
mod session;
mod sim;
mod store;

#[cfg(test)]
mod tests;

pub use amplify::{
    QKD_TOEPLITZ_MAX_INPUT_BITS, qkd_binary_entropy, qkd_finite_key_input, qkd_qber_ladder_rung,
    qkd_secret_length, qkd_secret_length_bb84, qkd_toeplitz_hash, qkd_toeplitz_seed_bits,
};
pub use block::{
    QKD_SEED_LEN, qkd_block, qkd_block_clone, qkd_block_free, qkd_block_from_bytes,
    qkd_block_from_seed, qkd_block_hamming_distance, qkd_block_len, qkd_block_random,
    qkd_block_to_bytes, qkd_random_seed,
};
pub use buffer::{qkd_buffer, qkd_buffer_data, qkd_buffer_free};
pub use cascade::{
    qkd_cascade_alice, qkd_cascade_alice_free, qkd_cascade_alice_is_done,
    qkd_cascade_alice_leak_bits, qkd_cascade_alice_new, qkd_cascade_alice_receive,
    qkd_cascade_alice_take_message, qkd_cascade_bob, qkd_cascade_bob_free, qkd_cascade_bob_key,
    qkd_cascade_bob_new, qkd_cascade_bob_receive, qkd_cascade_bob_stats,
    qkd_cascade_bob_take_message, qkd_cascade_loopback, qkd_cascade_report, qkd_cascade_stats,
};
pub use confirm::{
    qkd_confirm, qkd_confirm_finish, qkd_confirm_free, qkd_confirm_outcome, qkd_confirm_respond,
    qkd_confirm_start, qkd_confirm_tag_bits,
};
pub use entropy::{
    QKD_ENTROPY_DEFAULT_FALSE_ALARM, QKD_ENTROPY_MIN_BYTES, qkd_entropy_assess,
    qkd_entropy_assess_block, qkd_entropy_report, qkd_verdict,
};
pub use estimate::{
    qkd_bound, qkd_qber_estimate, qkd_qber_estimate_from_counts, qkd_qber_upper_bound,
    qkd_sample_compare, qkd_sample_disclose,
};
pub use pipeline::{
    QKD_REASON_LEN, qkd_block_outcome, qkd_block_report, qkd_pipeline_config,
    qkd_pipeline_config_default, qkd_pipeline_process_block,
};
pub use result::{qkd_last_error_message, qkd_result, qkd_result_message};
pub use session::{
    QKD_BLOCK_ID_MAX_BYTES, qkd_link, qkd_link_auth_available_bits, qkd_link_auth_refill,
    qkd_link_free, qkd_link_new, qkd_session, qkd_session_alice_new, qkd_session_bob_new,
    qkd_session_free, qkd_session_handle, qkd_session_is_finished, qkd_session_message_block_id,
    qkd_session_outcome, qkd_session_poll_transmit,
};
pub use sim::{qkd_error_model, qkd_sim_report, qkd_simulate};
pub use store::{
    QKD_KEY_ID_STR_LEN, qkd_key_id, qkd_key_id_parse, qkd_key_id_to_string, qkd_store,
    qkd_store_allocate, qkd_store_append, qkd_store_available_bits, qkd_store_block_info,
    qkd_store_fetch, qkd_store_free, qkd_store_open, qkd_store_open_encrypted,
};

/// The library version ("0.1.0"), a static NUL-terminated string. Never NULL; do not free.
#[unsafe(no_mangle)]
pub extern "C" fn qkd_version() -> *const std::ffi::c_char {
    const VERSION: &std::ffi::CStr = match std::ffi::CStr::from_bytes_with_nul(
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
    ) {
        Ok(v) => v,
        Err(_) => panic!("the package version contains a NUL byte"),
    };
    VERSION.as_ptr()
}
