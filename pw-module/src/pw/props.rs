//! An owned `pw_properties` (PipeWire's string dictionary).

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::io;
use std::ptr::NonNull;

use pipewire::sys as pw_sys;

/// An owned `pw_properties`, freed on drop unless handed to PipeWire with [`Props::into_raw`].
pub struct Props(NonNull<pw_sys::pw_properties>);

impl Props {
    /// Empty properties.
    pub fn new() -> io::Result<Props> {
        // SAFETY: pw_properties_new takes a NULL-terminated key/value vararg list; NULL alone
        // is the empty list.
        let raw = unsafe { pw_sys::pw_properties_new(std::ptr::null()) };
        NonNull::new(raw)
            .map(Props)
            .ok_or_else(io::Error::last_os_error)
    }

    /// Parses PipeWire's relaxed-JSON object text (`{ key = value ... }` or without braces),
    /// as `pw_properties_new_string` does for module arguments.
    pub fn from_string(text: &CStr) -> io::Result<Props> {
        // SAFETY: `text` is a valid NUL-terminated string for the duration of the call.
        let raw = unsafe { pw_sys::pw_properties_new_string(text.as_ptr()) };
        NonNull::new(raw)
            .map(Props)
            .ok_or_else(io::Error::last_os_error)
    }

    /// Adds the keys of `text` (relaxed-JSON object), overwriting existing ones.
    pub fn update_from_string(&mut self, text: &str) {
        // SAFETY: the pointer/length pair describes `text`, which outlives the call; the
        // function copies what it keeps.
        unsafe {
            pw_sys::pw_properties_update_string(self.0.as_ptr(), text.as_ptr().cast(), text.len());
        }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        // SAFETY: both pointers are valid; the returned string (if any) is owned by the
        // properties and copied before they can change.
        unsafe {
            let v = pw_sys::pw_properties_get(self.0.as_ptr(), key.as_ptr());
            (!v.is_null()).then(|| CStr::from_ptr(v).to_string_lossy().into_owned())
        }
    }

    /// Sets `key` to `value` (both must be free of NUL bytes; others are ignored).
    pub fn set(&mut self, key: &str, value: &str) {
        let (Ok(k), Ok(v)) = (CString::new(key), CString::new(value)) else {
            return;
        };
        // SAFETY: valid pointers; the function copies both strings.
        unsafe {
            pw_sys::pw_properties_set(self.0.as_ptr(), k.as_ptr(), v.as_ptr());
        }
    }

    /// Sets `key` only if it is not set yet.
    pub fn set_default(&mut self, key: &str, value: &str) {
        if self.get(key).is_none() {
            self.set(key, value);
        }
    }

    /// Copies every entry into a map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        // SAFETY: `dict.items` points to `dict.n_items` valid items whose keys and values are
        // NUL-terminated strings owned by the properties, alive for this loop.
        unsafe {
            let dict = &(*self.0.as_ptr()).dict;
            for i in 0..dict.n_items as usize {
                let item = &*dict.items.add(i);
                if item.key.is_null() || item.value.is_null() {
                    continue;
                }
                out.insert(
                    CStr::from_ptr(item.key).to_string_lossy().into_owned(),
                    CStr::from_ptr(item.value).to_string_lossy().into_owned(),
                );
            }
        }
        out
    }

    /// Hands ownership to a PipeWire call that takes it (e.g. `pw_stream_new`).
    pub fn into_raw(self) -> *mut pw_sys::pw_properties {
        let raw = self.0.as_ptr();
        std::mem::forget(self);
        raw
    }
}

impl Drop for Props {
    fn drop(&mut self) {
        // SAFETY: we own the properties (into_raw forgets self) and free them once.
        unsafe { pw_sys::pw_properties_free(self.0.as_ptr()) }
    }
}
