//! Data-path isolation: discovery and registration tasks that hang or panic stop no traffic.

use super::*;

/// An agent with a ZooKeeper-discovered service `service` and a registered service `registered` (a
/// TCP check on `port`), for the fault-injection cases; every name is unique to its case, since the
/// injection points are shared by the whole test process.
async fn faulty_agent(zk: &ZooKeeper, service: &str, registered: &str, port: u16) -> Agent {
    agent(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nservices:\n  {service}:\n    listen: 127.0.0.1:0\n    discovery:\n      zookeeper: {{ hosts: [{zk}], path: /nerve/services/{service}/services, session_timeout: 1s }}\nregister:\n  instance_id: i-{registered}\n  drain: 0s\n  services:\n    {registered}:\n      host: 127.0.0.1\n      port: {port}\n      zk_hosts: [{zk}]\n      zk_path: /nerve/services/{registered}/services\n      session_timeout: 1s\n      check_interval: 100ms\n      checks: [{{ type: tcp, timeout: 200ms, rise: 1, fall: 1 }}]\n",
        zk = zk.address(),
    ))
    .await
}

/// The znodes under `path`.
async fn registered(client: &zookeeper_client::Client, path: &str) -> usize {
    client.list_children(path).await.unwrap_or_default().len()
}

/// One case's world: ZooKeeper listing backend `a` of `svc`, an agent that discovers `svc` and
/// registers `reg` (checked against backend `b`), both settled, and a TCP load running through `svc`.
struct Scene {
    _zk: ZooKeeper,
    client: zookeeper_client::Client,
    path: String,
    reg_path: String,
    a: EchoBackend,
    b: EchoBackend,
    agent: Agent,
    load: Load,
}

impl Scene {
    async fn start(svc: &str, reg: &str) -> Self {
        let zk = ZooKeeper::start().await;
        let (a, b) = (EchoBackend::start("a").await, EchoBackend::start("b").await);
        let client = zk.client().await;
        let path = format!("/nerve/services/{svc}/services");
        put(
            &client,
            &format!("{path}/a"),
            &nerve("127.0.0.1", a.addr.port(), "a"),
        )
        .await;
        let agent = faulty_agent(&zk, svc, reg, b.addr.port()).await;
        wait_backends_of(&agent, svc, &[&a.hostport()], Duration::from_secs(5)).await;
        let reg_path = format!("/nerve/services/{reg}/services");
        assert!(
            eventually_async(Duration::from_secs(5), || async {
                registered(&client, &reg_path).await == 1
            })
            .await
        );
        let load = tcp_load(agent.service_addr(svc).unwrap(), Duration::from_secs(60));
        load.wait_for(50, Duration::from_secs(10)).await;
        Self {
            _zk: zk,
            client,
            path,
            reg_path,
            a,
            b,
            agent,
            load,
        }
    }

    /// The znodes registered for `reg`.
    async fn registered(&self) -> usize {
        registered(&self.client, &self.reg_path).await
    }

    /// Lists backend `b` too.
    async fn list_b(&self) {
        put(
            &self.client,
            &format!("{}/b", self.path),
            &nerve("127.0.0.1", self.b.addr.port(), "b"),
        )
        .await;
    }
}

/// Data-path isolation: discovery and registration tasks hung (not panicked) mid-work stop no traffic;
/// the watchdog logs and counts them; released, they carry on where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_discovery_and_registration_tasks_stop_no_traffic() {
    let (svc, reg) = ("hungweb", "hungreg");
    let scene = Scene::start(svc, reg).await;
    let discovery = sinew::fault::hang("zookeeper_discovery", svc);
    let registration = sinew::fault::hang("registration", reg);
    // A change wakes discovery, which hangs before it reads; registration hangs in its next round.
    scene.list_b().await;
    let hung = eventually(Duration::from_secs(5), || {
        sinew::fault::waiting("zookeeper_discovery", svc) == 1
            && sinew::fault::waiting("registration", reg) == 1
    })
    .await;
    assert!(hung, "both tasks are stuck");
    scene.load.wait_for(500, Duration::from_secs(20)).await;
    assert_eq!(
        backends_of(&scene.agent, svc),
        vec![scene.a.hostport()],
        "hung discovery changed nothing"
    );
    assert_eq!(
        scene.registered().await,
        1,
        "the registration stays while its task hangs"
    );
    // The watchdog sees both stuck mid-work (limits: three 1 s session timeouts; the two-second floor).
    let stalls = |task: &str| format!("sinew_task_stalls_total{{task=\"{task}\"}}");
    for task in ["zookeeper_discovery", "registration"] {
        assert!(
            eventually_async(Duration::from_secs(10), || async {
                agent_metric(&scene.agent, &stalls(task)).await == Some(1.0)
            })
            .await,
            "the stuck {task} task is counted"
        );
    }

    drop(discovery);
    drop(registration);
    wait_backends_of(
        &scene.agent,
        svc,
        &[&scene.a.hostport(), &scene.b.hostport()],
        Duration::from_secs(5),
    )
    .await;
    let (status, _) = post(
        scene.agent.admin_addr(),
        &format!("/api/register/{reg}/maintenance"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            scene.registered().await == 0
        })
        .await,
        "registration works again: maintenance removes the znode"
    );
    scene.load.wait_for(50, Duration::from_secs(10)).await;
    let tally = scene.load.finish().await;
    println!("hung tasks: {tally:?}");
    tally.assert_clean(500, "hung background tasks");
}

/// Data-path isolation: discovery and registration tasks that panic mid-work are counted and restarted,
/// and traffic never stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_discovery_and_registration_tasks_are_restarted_under_load() {
    let (svc, reg) = ("crashweb", "crashreg");
    let scene = Scene::start(svc, reg).await;
    sinew::fault::panic_once("zookeeper_discovery", svc);
    sinew::fault::panic_once("registration", reg);
    scene.list_b().await;
    let panics = |task: &str| format!("sinew_task_panics_total{{task=\"{task}\"}}");
    for task in ["zookeeper_discovery", "registration"] {
        assert!(
            eventually_async(Duration::from_secs(5), || async {
                agent_metric(&scene.agent, &panics(task)).await == Some(1.0)
            })
            .await,
            "the panic of {task} is counted"
        );
    }
    // Restarted: discovery reads the change, registration keeps exactly one znode.
    wait_backends_of(
        &scene.agent,
        svc,
        &[&scene.a.hostport(), &scene.b.hostport()],
        Duration::from_secs(5),
    )
    .await;
    scene.load.wait_for(300, Duration::from_secs(20)).await;
    assert!(
        eventually_async(Duration::from_secs(5), || async {
            scene.registered().await == 1
        })
        .await
    );
    let tally = scene.load.finish().await;
    println!("panicking tasks: {tally:?}");
    tally.assert_clean(300, "panicking background tasks");
    assert!(
        tally.from("b") > 0,
        "the restarted discovery task moved traffic"
    );
}
