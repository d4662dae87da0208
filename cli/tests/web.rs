//! `wavesync web` in a real browser: a master (the engine) and a receiver on a virtual DAC,
//! `wavesync web` serving their rooms, and Debian's Chromium (headless, driven over the DevTools
//! protocol) loading the page, finding both rooms with their live figures, and clicking the
//! middle of one room's volume slider: that receiver's volume must change to about 50 (and the
//! other room's not), through the page's API and the master's control path. Chromium is kept on loopback (every host name but 127.0.0.1
//! unresolvable, background networking off). Needs `chromium` (scripts/setup installs it).

#[path = "../../test-support/skip.rs"]
mod skip;
mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use headless_chrome::{Browser, LaunchOptions};
use support::*;

struct Web(Child);

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

/// `GET path` on the page's server; the body, once it answers 200.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_page_shows_the_room_and_its_slider_sets_the_volume() {
    let chromium = Path::new("/usr/bin/chromium");
    if !chromium.exists() {
        skip::skip_or_fail("no /usr/bin/chromium (apt-get install chromium; scripts/setup does)");
        return;
    }
    let s = Scratch::new("wavesync-web");
    let stop = Arc::new(AtomicBool::new(false));
    // Two rooms, each on its own unicast port of the same stream.
    let (data, data2) = (free_port(), free_port());
    let dests = [data, data2]
        .iter()
        .map(|p| format!("127.0.0.1:{p}").parse().expect("address"))
        .collect();
    let (control, master) = start_master(dests, 0, stop.clone(), two_tones);
    let rx = start_receiver(&s, "kitchen", data, 20);
    let rx2 = start_receiver(&s, "living room", data2, 20);
    let at = format!("127.0.0.1:{control}");
    wait_for("both rooms report to the master", 10, || {
        let list = rooms(&at);
        (room(&list, "kitchen").is_some() && room(&list, "living room").is_some()).then_some(())
    });

    let web_port = free_tcp_port();
    let _web = Web(Command::new(env!("CARGO_BIN_EXE_wavesync"))
        .args(["web", "--listen", &format!("127.0.0.1:{web_port}")])
        .args(["--master", &at])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run wavesync web"));
    let api = wait_for("wavesync web answers", 10, || get(web_port, "/api/rooms"));
    assert!(api.contains("\"kitchen\""), "{api}");

    let profile = s.path("chromium");
    let browser = Browser::new(LaunchOptions {
        path: Some(chromium.to_path_buf()),
        headless: true,
        sandbox: false,
        window_size: Some((820, 640)),
        user_data_dir: Some(profile),
        idle_browser_timeout: Duration::from_secs(60),
        args: vec![
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1".as_ref(),
            "--disable-background-networking".as_ref(),
            "--disable-component-update".as_ref(),
            "--no-first-run".as_ref(),
        ],
        ..LaunchOptions::default()
    })
    .expect("start headless Chromium");
    let tab = browser.new_tab().expect("a tab");
    tab.navigate_to(&format!("http://127.0.0.1:{web_port}/"))
        .and_then(|t| t.wait_until_navigated())
        .expect("load the page");
    // The page fills its list from the API: the room, its state and figures appear.
    let names = wait_for("the page lists both rooms", 10, || {
        let v = tab
            .evaluate(
                "[...document.querySelectorAll('.room .name')].map(e => e.textContent).sort().join(',')",
                false,
            )
            .ok()?
            .value?;
        let t = v.as_str()?.to_string();
        t.contains(',').then_some(t)
    });
    assert_eq!(names, "kitchen,living room");
    // The kitchen's card (the page keeps the master's order; find it by name).
    let card = "[...document.querySelectorAll('.room')].find(r => r.dataset.name === 'kitchen')";
    tab.evaluate(&format!("{card}.id = 'kitchen'"), false)
        .expect("mark the kitchen's card");
    let figures = tab
        .evaluate(
            "document.querySelector('#kitchen .figures').textContent",
            false,
        )
        .ok()
        .and_then(|r| r.value)
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    assert!(figures.contains("sync"), "figures: {figures}");
    let before = room(&rooms(&at), "kitchen").expect("room")["volume"].clone();
    assert_eq!(before, 100);

    // A real click in the middle of the slider (mouse events through the protocol).
    tab.wait_for_element("#kitchen .volume")
        .and_then(|e| e.click().map(|_| ()))
        .expect("click the volume slider");
    let volume = wait_for("the click reaches the room", 10, || {
        let v = room(&rooms(&at), "kitchen")?["volume"].as_u64()?;
        (v != 100).then_some(v)
    });
    assert!(
        (40..=60).contains(&volume),
        "the middle of the slider set volume {volume}"
    );
    assert_eq!(
        room(&rooms(&at), "living room").expect("room")["volume"],
        100,
        "only the kitchen changed"
    );
    // The receiver itself took it (its own status, not the master's table).
    let sock = s.path("kitchen.sock");
    wait_for("the receiver's own status shows it", 5, || {
        let out = wavesync(&["status", "--json", "--socket", sock.to_str()?]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["room"]["volume"].as_u64() == Some(volume)).then_some(())
    });
    // The page shows it too, after its next poll.
    wait_for("the page shows the new volume", 5, || {
        let v = tab
            .evaluate(
                "document.querySelector('#kitchen .volume-value').textContent",
                false,
            )
            .ok()?
            .value?;
        (v.as_str()? == volume.to_string()).then_some(())
    });
    if let Ok(png) = tab.capture_screenshot(
        headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption::Png,
        None,
        None,
        true,
    ) {
        let _ = std::fs::write(Path::new(env!("CARGO_TARGET_TMPDIR")).join("web.png"), png);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = master.join();
    let _ = rx.join();
    let _ = rx2.join();
}
