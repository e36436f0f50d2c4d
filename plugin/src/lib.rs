//! The boundary between the Herald gateway and sink plugins loaded at run time.
//!
//! A plugin is a `cdylib`; the host and the plugin exchange JSON bytes through a
//! `#[repr(C)]` vtable whose first field is [`ABI_VERSION`] (DESIGN.md §8). The vtable, the
//! ownership rules for buffers and the `export_sink!` macro for plugin authors are built on
//! this version number.

/// The version of the plugin ABI. The host refuses a library that reports another one.
pub const ABI_VERSION: u32 = 1;
