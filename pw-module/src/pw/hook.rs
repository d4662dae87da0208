//! `spa_hook`: the listener record PipeWire links into an object's listener list.
//!
//! The C helpers (`spa_hook_remove`) are static inline functions that bindgen cannot bind;
//! this file does the same in Rust. A hook must stay at a fixed address while it is linked:
//! keep it inside a `Box`ed struct and never move it.

use pipewire::spa::sys as spa_sys;

/// A zeroed (unlinked) hook.
pub fn new_hook() -> spa_sys::spa_hook {
    // SAFETY: spa_hook is a C struct of pointers and an optional function pointer; all-zero
    // is its documented "not linked" state (`spa_zero(hook)` in C).
    unsafe { std::mem::zeroed() }
}

/// Unlinks `hook` from the list it is on (if any), calls its `removed` callback like
/// `spa_hook_remove`, and zeroes it so a second call does nothing.
///
/// # Safety
/// `hook` must point to a hook that is either zeroed or linked into a live listener list.
pub unsafe fn remove(hook: *mut spa_sys::spa_hook) {
    // SAFETY: the caller guarantees `hook` is valid; a linked hook's neighbours are valid
    // list nodes, so unlinking it is the same pointer surgery as spa_list_remove.
    unsafe {
        let link = std::ptr::addr_of_mut!((*hook).link);
        if !(*link).prev.is_null() {
            (*(*link).prev).next = (*link).next;
            (*(*link).next).prev = (*link).prev;
        }
        if let Some(removed) = (*hook).removed {
            removed(hook);
        }
        hook.write(new_hook());
    }
}
