//! placeholder, replaced by its issue.
#![no_std]
