//! A real RabbitMQ for tests: Debian's `rabbitmq-server`, started once per test binary (it takes seconds
//! to boot) on free loopback ports with a throwaway directory, its own epmd and a unique node name, and
//! stopped by PID when the test process exits. `.ci/run` installs the package.
//!
//! Users are created at boot from a definitions file, one per test that needs to tell its own connections
//! apart in the broker's log: [`USERS`], each with [`PASSWORD`], in vhost [`VHOST`].

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The users the broker knows.
pub const USERS: [&str; 3] = ["clean", "relayed", "refused"];
/// Every user's password.
pub const PASSWORD: &str = "s3cret";
/// The vhost every user may use.
pub const VHOST: &str = "sinew";

/// The running broker.
pub struct Rabbit {
    /// Its AMQP listener on 127.0.0.1.
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Rabbit {
    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// What the exit hook stops and removes.
struct Running {
    broker: Option<Child>,
    epmd: Option<Child>,
    dir: PathBuf,
}

static RUNNING: Mutex<Option<Running>> = Mutex::new(None);
static BROKER: OnceLock<Result<Rabbit, String>> = OnceLock::new();

extern "C" {
    fn atexit(hook: extern "C" fn()) -> std::os::raw::c_int;
    fn kill(pid: i32, signal: i32) -> std::os::raw::c_int;
}

const SIGKILL: i32 = 9;
/// The broker's own start script (Debian's /usr/sbin wrapper would switch to the rabbitmq user).
const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// Stops the broker (its whole process group: the start script, the Erlang VM and its helpers) and
/// epmd, then removes the directory. Runs when the test binary exits, passing or failing.
extern "C" fn stop_at_exit() {
    let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    let Some(r) = running.as_mut() else { return };
    if let Some(mut broker) = r.broker.take() {
        // The start script was made the leader of its own process group: the group's id is its PID.
        unsafe { kill(-(broker.id() as i32), SIGKILL) };
        let _ = broker.wait();
    }
    if let Some(mut epmd) = r.epmd.take() {
        let _ = epmd.kill();
        let _ = epmd.wait();
    }
    let _ = std::fs::remove_dir_all(&r.dir);
}

/// The broker shared by this test binary, started by the first caller (blocking: call it from
/// `spawn_blocking` or through [`shared`]).
pub fn broker() -> &'static Rabbit {
    match BROKER.get_or_init(start) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

/// [`broker`] without blocking the async test.
pub async fn shared() -> &'static Rabbit {
    tokio::task::spawn_blocking(broker)
        .await
        .expect("rabbitmq fixture")
}

fn start() -> Result<Rabbit, String> {
    if !Path::new(SERVER).exists() {
        return Err(
            "rabbitmq-server is not installed (Debian package rabbitmq-server; bash .ci/run installs it)"
                .into(),
        );
    }
    let suffix = format!("{:08x}", fastrand::u32(..));
    let dir = std::env::temp_dir().join(format!("sinew-rabbitmq-{}-{suffix}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    *RUNNING.lock().unwrap_or_else(|p| p.into_inner()) = Some(Running {
        broker: None,
        epmd: None,
        dir: dir.clone(),
    });
    unsafe { atexit(stop_at_exit) };

    let free = super::process::free_port;
    let (port, dist_port, epmd_port) = (free(), free(), free());
    let node = format!("sinew-test-{suffix}");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok::<_, String>(path)
    };
    let users: Vec<String> = USERS
        .iter()
        .map(|u| format!(r#"{{"name": "{u}", "password": "{PASSWORD}", "tags": []}}"#))
        .collect();
    let permissions: Vec<String> = USERS
        .iter()
        .map(|u| format!(r#"{{"user": "{u}", "vhost": "{VHOST}", "configure": ".*", "write": ".*", "read": ".*"}}"#))
        .collect();
    let definitions = write(
        "definitions.json",
        &format!(
            r#"{{"users": [{}], "vhosts": [{{"name": "{VHOST}"}}], "permissions": [{}]}}"#,
            users.join(", "),
            permissions.join(", ")
        ),
    )?;
    let config = write(
        "rabbitmq.conf",
        &format!(
            "listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\nload_definitions = {}\n",
            definitions.display()
        ),
    )?;
    let plugins = write("enabled_plugins", "")?;
    let env_file = write("rabbitmq-env.conf", "")?;

    // An epmd of our own on a free port, so that nothing is shared with other runs; the VM finds it
    // through ERL_EPMD_PORT and does not start another.
    let epmd = Command::new("epmd")
        .args(["-port", &epmd_port.to_string(), "-address", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start epmd: {e}"))?;
    set(|r| r.epmd = Some(epmd));
    wait_port(epmd_port, Duration::from_secs(10), || Ok(()))?;

    let out = std::fs::File::create(dir.join("server.out")).map_err(|e| e.to_string())?;
    let broker = Command::new(SERVER)
        .current_dir(&dir)
        .env("HOME", &dir)
        .env("RABBITMQ_NODENAME", format!("{node}@localhost"))
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_DIST_PORT", dist_port.to_string())
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
        .env("RABBITMQ_CONFIG_FILE", &config)
        .env("RABBITMQ_CONF_ENV_FILE", &env_file)
        .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
        .env("ERL_EPMD_PORT", epmd_port.to_string())
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start rabbitmq-server: {e}"))?;
    set(|r| r.broker = Some(broker));
    let output = dir.join("server.out");
    wait_port(port, Duration::from_secs(90), || {
        let exited = RUNNING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .and_then(|r| r.broker.as_mut())
            .and_then(|b| b.try_wait().ok().flatten());
        match exited {
            Some(status) => Err(format!(
                "rabbitmq-server exited with {status}: {}",
                std::fs::read_to_string(&output).unwrap_or_default()
            )),
            None => Ok(()),
        }
    })?;
    Ok(Rabbit {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        log: dir.join("log").join(format!("{node}@localhost.log")),
    })
}

fn set(f: impl FnOnce(&mut Running)) {
    if let Some(r) = RUNNING.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        f(r);
    }
}

/// Waits until 127.0.0.1:`port` accepts, calling `alive` between tries to fail early.
fn wait_port(
    port: u16,
    limit: Duration,
    alive: impl Fn() -> Result<(), String>,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        alive()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("nothing listened on {addr} within {limit:?}"))
}
