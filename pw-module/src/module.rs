//! The module's life: load (parse arguments, start the sender, connect a core, create the
//! sink), and the two ways it ends.
//!
//! Teardown order matters. When the daemon exits it disconnects cores (destroying their
//! streams) *before* it destroys modules. So the core proxy's `destroy` event forgets the core
//! and the stream and schedules the module's destruction; the module's `destroy` event then
//! destroys the stream and disconnects the core only if they still exist. Doing it any other
//! way frees the stream twice ("double free" on daemon exit).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io;
use std::ptr;

use pipewire::spa::sys as spa_sys;
use pipewire::sys as pw_sys;

use crate::config::ModuleConfig;
use crate::error::StartError;
use crate::pw::hook;
use crate::pw::log;
use crate::pw::props::Props;
use crate::sender::Sender;
use crate::sink::Sink;

/// Everything the loaded module owns. Boxed at a fixed address: PipeWire holds pointers to
/// it (listener data) until the module's `destroy` event frees it.
struct Module {
    module: *mut pw_sys::pw_impl_module,
    core: *mut pw_sys::pw_core,
    /// Whether we connected the core ourselves (and so must disconnect it).
    own_core: bool,
    core_listener: spa_sys::spa_hook,
    module_listener: spa_sys::spa_hook,
    /// Dropped before `sender`, so the process callback never outlives the sender's input.
    sink: Option<Sink>,
    sender: Option<Sender>,
}

static CORE_EVENTS: pw_sys::pw_proxy_events = pw_sys::pw_proxy_events {
    version: pw_sys::PW_VERSION_PROXY_EVENTS,
    destroy: Some(on_core_destroy),
    bound: None,
    removed: None,
    done: None,
    error: Some(on_core_error),
};

static MODULE_EVENTS: pw_sys::pw_impl_module_events = pw_sys::pw_impl_module_events {
    version: pw_sys::PW_VERSION_IMPL_MODULE_EVENTS,
    destroy: Some(on_module_destroy),
    free: None,
    initialized: None,
    registered: None,
};

/// The module's information for `pw-cli info`: author, description, usage and version. The
/// usage is built from the defaults the parser applies, the version from the crate's.
fn module_info() -> Vec<(&'static CStr, CString)> {
    let text = |s: String| CString::new(s).unwrap_or_default();
    vec![
        (c"module.author", text("WaveSync developers".into())),
        (
            c"module.description",
            text("WaveSync: a sink that streams sample-accurately to WaveSync receivers".into()),
        ),
        (c"module.usage", text(crate::config::usage())),
        (c"module.version", text(env!("CARGO_PKG_VERSION").into())),
    ]
}

/// The body of `pipewire__module_init`: returns 0 or a negative errno, after logging one
/// line that says why.
///
/// # Safety
/// `module` must be the live module PipeWire is loading; `args` NULL or a valid C string.
pub unsafe fn init(module: *mut pw_sys::pw_impl_module, args: *const c_char) -> c_int {
    // SAFETY: forwarded caller guarantees.
    match unsafe { try_init(module, args) } {
        Ok(()) => 0,
        Err(e) => {
            log::error(&format!("not loaded: {e}"));
            match e {
                StartError::PipeWire { source, .. } => -source.raw_os_error().unwrap_or(libc::EIO),
                _ => -libc::EINVAL,
            }
        }
    }
}

unsafe fn try_init(
    module: *mut pw_sys::pw_impl_module,
    args: *const c_char,
) -> Result<(), StartError> {
    let args = if args.is_null() {
        c""
    } else {
        // SAFETY: non-null `args` is a valid C string (caller).
        unsafe { CStr::from_ptr(args) }
    };
    let pw_err = |what| move |source: io::Error| StartError::PipeWire { what, source };
    let arg_props = Props::from_string(args).map_err(pw_err("parsing the module arguments"))?;
    let config = ModuleConfig::from_args(&arg_props.to_map(), &hostname())?;

    // SAFETY: `module` is live (caller).
    let context = unsafe { pw_sys::pw_impl_module_get_context(module) };
    if context.is_null() {
        return Err(pw_err("pw_impl_module_get_context")(io::Error::other(
            "no context",
        )));
    }

    let (sender, input) = Sender::start(&config)?;

    let mut this = Box::new(Module {
        module,
        core: ptr::null_mut(),
        own_core: true,
        core_listener: hook::new_hook(),
        module_listener: hook::new_hook(),
        sink: None,
        sender: Some(sender),
    });

    // Inside the daemon, connect to ourselves (no socket round trip); in a client process
    // (`pipewire -c wavesync-master.conf`), connect to the running daemon.
    let in_daemon = context_is_daemon(context);
    let mut core_props = Props::new().map_err(pw_err("pw_properties_new"))?;
    if let Some(remote) = &config.remote_name {
        core_props.set("remote.name", remote);
    }
    // SAFETY: `context` is live; both connect calls take ownership of the properties.
    let core = unsafe {
        if in_daemon {
            pw_sys::pw_context_connect_self(context, core_props.into_raw(), 0)
        } else {
            pw_sys::pw_context_connect(context, core_props.into_raw(), 0)
        }
    };
    if core.is_null() {
        return Err(pw_err("connecting to PipeWire")(io::Error::last_os_error()));
    }
    this.core = core;
    let data: *mut Module = &mut *this;
    // SAFETY: the hook lives in the Box, which stays alive until the module's destroy event
    // (or the error path below, which disconnects the core first, removing the hook).
    unsafe {
        pw_sys::pw_proxy_add_listener(
            core.cast(),
            ptr::addr_of_mut!((*data).core_listener),
            &CORE_EVENTS,
            data.cast(),
        );
    }

    // SAFETY: `core` is live and we are on the main loop (module init runs there).
    match unsafe { Sink::new(core, &config, input) } {
        Ok(sink) => this.sink = Some(sink),
        Err(source) => {
            // SAFETY: tears down what was built above, in order; see `teardown`.
            unsafe { teardown(&mut this) };
            return Err(StartError::PipeWire {
                what: "creating the sink stream",
                source,
            });
        }
    }

    // SAFETY: `module` is live; hook and data live in the Box handed over below.
    unsafe {
        pw_sys::pw_impl_module_add_listener(
            module,
            ptr::addr_of_mut!((*data).module_listener),
            &MODULE_EVENTS,
            data.cast(),
        );
        let info = module_info();
        let items: Vec<spa_sys::spa_dict_item> = info
            .iter()
            .map(|(k, v)| spa_sys::spa_dict_item {
                key: k.as_ptr(),
                value: v.as_ptr(),
            })
            .collect();
        let dict = spa_sys::spa_dict {
            flags: 0,
            n_items: items.len() as u32,
            items: items.as_ptr(),
        };
        pw_sys::pw_impl_module_update_properties(module, &dict);
    }
    log::info(&format!(
        "loaded: node {:?} sending {} Hz {} ch {:?} to {:?}, latency {} ms, {} frames/packet, {}",
        config
            .node_props
            .iter()
            .find(|(k, _)| k == "node.name")
            .map(|(_, v)| v.as_str())
            .unwrap_or(""),
        config.format.rate,
        config.format.channels,
        config.format.sample,
        config.destinations,
        config.latency_ns as f64 / 1e6,
        config.frames_per_packet,
        if in_daemon {
            "inside the daemon"
        } else {
            "as a client"
        },
    ));
    // From here on PipeWire owns the module state; the destroy event frees it.
    let _ = Box::into_raw(this);
    Ok(())
}

/// Destroys the sink (if still there), disconnects our core (if still there), stops the
/// sender. Idempotent.
///
/// # Safety
/// Main loop only; `m.core`, if non-null, is live.
unsafe fn teardown(m: &mut Module) {
    m.sink = None;
    if !m.core.is_null() {
        // SAFETY: the hook is linked into the live core proxy.
        unsafe { hook::remove(&mut m.core_listener) };
        if m.own_core {
            // SAFETY: the core is live and ours.
            unsafe { pw_sys::pw_core_disconnect(m.core) };
        }
        m.core = ptr::null_mut();
    }
    m.sender = None;
}

unsafe extern "C" fn on_core_destroy(data: *mut c_void) {
    // SAFETY: `data` is the Module registered with this listener, alive until module destroy.
    let m = unsafe { &mut *data.cast::<Module>() };
    // SAFETY: the hook is linked into the proxy being destroyed.
    unsafe { hook::remove(&mut m.core_listener) };
    m.core = ptr::null_mut();
    // The core's streams are gone with it: forget ours without destroying it again.
    if let Some(sink) = m.sink.as_mut() {
        sink.forget_stream();
    }
    // SAFETY: `m.module` is the live module that owns this state.
    unsafe { pw_sys::pw_impl_module_schedule_destroy(m.module) };
}

unsafe extern "C" fn on_core_error(
    data: *mut c_void,
    seq: c_int,
    res: c_int,
    message: *const c_char,
) {
    // SAFETY: as in on_core_destroy.
    let m = unsafe { &mut *data.cast::<Module>() };
    let msg = if message.is_null() {
        String::new()
    } else {
        // SAFETY: PipeWire passes a valid C string for the duration of the callback.
        unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned()
    };
    log::error(&format!(
        "core error seq:{seq} res:{res} ({}): {msg}",
        io::Error::from_raw_os_error(-res)
    ));
    if res == -libc::EPIPE {
        // The daemon went away (client mode): unload.
        // SAFETY: `m.module` is live.
        unsafe { pw_sys::pw_impl_module_schedule_destroy(m.module) };
    }
}

unsafe extern "C" fn on_module_destroy(data: *mut c_void) {
    // SAFETY: `data` is the Box<Module> leaked in try_init; this is its last use.
    let mut m = unsafe { Box::from_raw(data.cast::<Module>()) };
    // SAFETY: the hook is linked into the module being destroyed.
    unsafe { hook::remove(&mut m.module_listener) };
    // SAFETY: main loop; a non-null core is live (its destroy event nulls it).
    unsafe { teardown(&mut m) };
    log::info("unloaded");
}

fn context_is_daemon(context: *mut pw_sys::pw_context) -> bool {
    // SAFETY: `context` is live; its properties outlive this call.
    unsafe {
        let props = pw_sys::pw_context_get_properties(context);
        if props.is_null() {
            return false;
        }
        let v = pw_sys::pw_properties_get(props, c"core.daemon".as_ptr());
        !v.is_null() && matches!(CStr::from_ptr(v).to_bytes(), b"true" | b"1")
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its length; gethostname NUL-terminates on success when
    // the name fits, and we stop at the first NUL anyway.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
