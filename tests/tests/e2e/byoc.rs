//! Azure environments end to end on the local Resource Manager: the bootstrap bundle's
//! role is what the stand-in enforces; registration turns the environment ready and
//! approves its private endpoint; discovery; network steps and their check; validation in
//! container groups (success and each failure kind, groups always deleted); the agents'
//! scale set (a call outside the role fails naming the action; create, scale, pause,
//! resume, upgrade, delete; redelivery creates nothing twice); VNet peering through every
//! state.

use std::time::{Duration, Instant};

use culvert_tests::arm::Arm;
use culvert_tests::bundle::role_actions;
use culvert_tests::stack::Stack;
use culvert_tests::{Cluster, workdir};
use serde_json::{Value, json};

/// The customers' subscription of the local Resource Manager (see `culvert local up`).
const SUB: &str = "5c0f3e1a-7b2d-4c8e-9a61-0d4b2f6e8a10";
const VMSS_WRITE: &str = "Microsoft.Compute/virtualMachineScaleSets/write";

fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    while Instant::now() < deadline {
        last = f();
        if last.is_none() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "timed out after {secs} s waiting for {what}: {}",
        last.unwrap_or_default()
    );
}

fn env(stack: &Stack) -> Value {
    stack.json(&["env", "get", "byoc"])
}

fn connection(stack: &Stack, name: &str) -> Value {
    stack.json(&["peering", "get", name, "--env", "byoc"])
}

fn wait_connection(stack: &Stack, name: &str, state: &str) -> Value {
    let mut last = Value::Null;
    wait_for(60, &format!("peering {name} to be {state}"), || {
        last = connection(stack, name);
        (last["state"] != state).then(|| last.to_string())
    });
    last
}

fn validate(stack: &Stack, connector: &str) -> Value {
    let r = stack.culvert(&[
        "--output",
        "json",
        "connector",
        "validate",
        connector,
        "--wait",
        "--timeout",
        "120",
    ]);
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("validate {connector}: {e}: {} {}", r.stdout, r.stderr))
}

fn create_connector(stack: &Stack, name: &str, port: u16, db: &str) {
    let (port, db) = (format!("port={port}"), format!("database={db}"));
    let r = stack.culvert(&[
        "connector",
        "create",
        name,
        "--env",
        "byoc",
        "--type",
        "postgres-source",
        "--set",
        "host=127.0.0.1",
        "--set",
        &port,
        "--set",
        "user=postgres",
        "--set",
        &db,
        "--set",
        "sslmode=disable",
    ]);
    assert_eq!(r.code, 0, "connector create {name}: {}", r.stderr);
}

/// How long a validation container may run. Compiling the component inside a fresh
/// container takes seconds of CPU, and far more when the test machine is busy.
const VALIDATION_TIMEOUT: &str = "45";

#[test]
fn an_azure_environment_from_bootstrap_to_agents_validation_and_peering() {
    let dir = workdir("byoc");
    let stack = Stack::up_with_env(
        &dir.join("stack"),
        &[("CULVERT_VALIDATION_TIMEOUT_SECONDS", VALIDATION_TIMEOUT)],
    );
    let arm = Arm::of_stack(stack.state());

    // The customer's network, as it exists before Culvert.
    let net = stack.json(&["local", "azure", "network"]);
    let net_str = |k: &str| {
        net[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k}: {net}"))
            .to_string()
    };
    let (vnet, agents_subnet) = (net_str("vnet_id"), net_str("agents_subnet_id"));
    let rg = format!("/subscriptions/{SUB}/resourceGroups/rg-data");
    assert_eq!(net_str("subscription_id"), SUB);
    assert_eq!(net_str("resource_group"), "rg-data");
    stack.json(&[
        "env",
        "create",
        "byoc",
        "--azure",
        "--subscription",
        SUB,
        "--location",
        "eastus2",
        "--resource-group",
        "rg-data",
        "--vnet-id",
        &vnet,
        "--subnet-id",
        &agents_subnet,
    ]);

    // The bundle: files on disk, and the resources it creates.
    let out = dir.join("bundle");
    let r = stack.culvert(&["env", "bootstrap", "byoc", "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for f in ["main.tf", "terraform.tfvars", "README.md"] {
        assert!(out.join(f).exists(), "{f} written");
    }
    let main_tf = std::fs::read_to_string(out.join("main.tf")).unwrap();
    let actions = role_actions(&main_tf);
    let mut want: Vec<String> = culvert_arm::operations::customer_role_actions()
        .iter()
        .map(|s| s.to_string())
        .collect();
    want.sort();
    let mut got = actions.clone();
    got.sort();
    assert_eq!(
        got, want,
        "the bundle's role is exactly what the control plane calls"
    );
    let tfvars = std::fs::read_to_string(out.join("terraform.tfvars")).unwrap();
    assert!(
        tfvars.contains(SUB) && tfvars.contains("rg-data") && tfvars.contains(&vnet),
        "{tfvars}"
    );
    let bundle = stack.json(&["env", "bootstrap", "byoc"]);
    let res = &bundle["resources"];
    let s = |k: &str| {
        res[k]
            .as_str()
            .unwrap_or_else(|| panic!("resources.{k}: {res}"))
            .to_string()
    };
    let principal = s("culvert_principal_id");

    // Before anything is applied the environment waits, saying what to do.
    wait_for(30, "the environment to report what is missing", || {
        let e = env(&stack);
        (!(e["state"] == "pending_bootstrap"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("bootstrap"))))
        .then(|| e.to_string())
    });

    // `terraform apply`, first with a role that lacks the scale set's write.
    let apply_bootstrap = |without: &[&str]| {
        let mut args = vec!["local", "azure", "apply-bootstrap", "byoc"];
        for a in without {
            args.extend(["--without-action", a]);
        }
        let r = stack.culvert(&args);
        assert_eq!(r.code, 0, "apply-bootstrap: {}{}", r.stdout, r.stderr);
    };
    apply_bootstrap(&[VMSS_WRITE]);
    assert_eq!(
        bundle["role"]["actions"].as_array().map(Vec::len),
        Some(actions.len()),
        "the API's role is the bundle's: {}",
        bundle["role"]
    );
    stack.wait_ready("byoc");
    let conns = arm
        .get(
            &format!("{}/privateEndpointConnections", s("metadata_service_id")),
            "2024-05-01",
        )
        .expect("connections");
    assert_eq!(
        conns["value"][0]["properties"]["privateLinkServiceConnectionState"]["status"], "Approved",
        "registration approved the private endpoint: {conns}"
    );

    // Discovery.
    for (ty, name, version, fqdn) in [
        (
            "Microsoft.DBforPostgreSQL/flexibleServers",
            "pg-orders",
            "2024-08-01",
            "pg-orders.postgres.database.azure.com",
        ),
        (
            "Microsoft.DBforMySQL/flexibleServers",
            "my-shop",
            "2023-12-30",
            "my-shop.mysql.database.azure.com",
        ),
        (
            "Microsoft.Sql/servers",
            "sql-crm",
            "2023-08-01",
            "sql-crm.database.windows.net",
        ),
        (
            "Microsoft.DBforMariaDB/servers",
            "maria-old",
            "2018-06-01",
            "maria-old.mariadb.database.azure.com",
        ),
    ] {
        arm.put(
            &format!("{rg}/providers/{ty}/{name}"),
            version,
            json!({"location": "eastus2", "properties": {"fullyQualifiedDomainName": fqdn, "version": "16", "state": "Ready"}}),
        );
    }
    let dbs = stack.json(&["env", "databases", "byoc"]);
    let items = dbs["items"].as_array().expect("items");
    let kinds: Vec<&str> = items.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["mariadb", "mysql-flexible", "postgresql-flexible", "sql"],
        "{dbs}"
    );
    let pg = items.iter().find(|d| d["name"] == "pg-orders").unwrap();
    assert_eq!(pg["host"], "pg-orders.postgres.database.azure.com");
    assert_eq!(pg["connector_type"], "postgres-source");

    // Network steps for a connector, checked through ARM before validation.
    let (src, _dst) = Cluster::pair();
    create_connector(&stack, "orders", src.port, "app");
    let db_nsg = net_str("db_nsg_id");
    let r = stack.culvert(&[
        "connector",
        "network",
        "orders",
        "--env",
        "byoc",
        "--db-nsg-id",
        &db_nsg,
        "--db-subnet-prefix",
        "10.20.2.0/24",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let steps = stack.json(&["connector", "network-steps", "orders", "--env", "byoc"]);
    let script = steps["script"].as_str().unwrap();
    for part in [
        "db-nsg",
        "10.20.1.0/24",
        "10.20.2.0/24",
        "az network nsg rule create",
    ] {
        assert!(script.contains(part), "script names {part}:\n{script}");
    }
    assert!(!steps["missing"].as_array().unwrap().is_empty(), "{steps}");
    let v = validate(&stack, "orders");
    assert_eq!(v["state"], "failed", "{v}");
    assert!(
        v.to_string().contains("network-steps"),
        "the failure points at the network steps: {v}"
    );

    // The customer runs the steps.
    let r = stack.culvert(&[
        "local",
        "azure",
        "apply-network-steps",
        "orders",
        "--env",
        "byoc",
    ]);
    assert_eq!(r.code, 0, "apply-network-steps: {}{}", r.stdout, r.stderr);
    let steps = stack.json(&["connector", "network-steps", "orders", "--env", "byoc"]);
    assert_eq!(steps["missing"], json!([]), "{steps}");

    // Validation in a container group: it passes, and the group is gone afterwards.
    let v = validate(&stack, "orders");
    assert_eq!(v["state"], "passed", "{v}");
    let groups = |arm: &Arm| {
        arm.get(
            &format!("{rg}/providers/Microsoft.ContainerInstance/containerGroups"),
            "2023-05-01",
        )
        .map(|l| l["value"].as_array().map(Vec::len).unwrap_or(0))
        .unwrap_or(0)
    };
    // The result arrives before the container exits; the group goes right after.
    wait_for(30, "the validation container group to be deleted", || {
        let n = groups(&arm);
        (n != 0).then(|| format!("{n} group(s) left"))
    });
    // A wrong database: the container reports the connector's own failure.
    create_connector(&stack, "wrongdb", src.port, "nope");
    let v = validate(&stack, "wrongdb");
    assert_eq!(v["state"], "failed", "{v}");
    assert!(
        v.to_string().contains("nope"),
        "the check names the database: {v}"
    );
    // A database that never answers: the container is stopped at the timeout and deleted.
    // The timeout leaves room for compiling the component on a loaded machine, so this
    // validation waits it out alongside the scale-set and peering flows below.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    create_connector(&stack, "silent", silent.local_addr().unwrap().port(), "app");
    let vmss_id = std::thread::scope(|scope| {
        let silent_validation = scope.spawn(|| validate(&stack, "silent"));

        // Agents: the role lacks the scale set's write, and the failure names it.
        let r = stack.culvert(&["env", "resume", "byoc"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        wait_for(60, "the refused scale set to be reported", || {
            let e = env(&stack);
            (!e["reason"].as_str().is_some_and(|r| r.contains(VMSS_WRITE))).then(|| e.to_string())
        });
        // The customer re-applies the bundle's full role; the same request goes through, twice.
        apply_bootstrap(&[]);
        for _ in 0..2 {
            let r = stack.culvert(&["env", "resume", "byoc"]);
            assert_eq!(r.code, 0, "{}", r.stderr);
        }
        let scale_sets = |arm: &Arm| {
            arm.get(
                &format!("{rg}/providers/Microsoft.Compute/virtualMachineScaleSets"),
                "2024-07-01",
            )
            .map(|l| l["value"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default()
        };
        wait_for(90, "an agent of the scale set to register", || {
            let e = env(&stack);
            (e["healthy_agents"].as_u64() < Some(1))
                .then(|| format!("{e} / {:?}", scale_sets(&arm)))
        });
        assert_eq!(
            scale_sets(&arm).len(),
            1,
            "a redelivered request creates nothing twice"
        );
        let vmss_id = scale_sets(&arm)[0]["id"].as_str().unwrap().to_string();
        let r = stack.culvert(&["env", "scale", "byoc", "2"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        wait_for(90, "two agents", || {
            let e = env(&stack);
            (e["healthy_agents"].as_u64() < Some(2)).then(|| e.to_string())
        });
        let power = |arm: &Arm| {
            arm.get(&format!("{vmss_id}/instanceView"), "2024-07-01")
                .map(|v| v["statuses"].to_string())
                .unwrap_or_default()
        };
        let r = stack.culvert(&["env", "pause", "byoc"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        wait_for(60, "the scale set to be deallocated", || {
            let p = power(&arm);
            (!p.contains("PowerState/deallocated")).then_some(p)
        });
        let r = stack.culvert(&["env", "resume", "byoc"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        wait_for(60, "the scale set to run again", || {
            let p = power(&arm);
            (!p.contains("PowerState/running")).then_some(p)
        });
        let r = stack.culvert(&["env", "upgrade", "byoc", "--version", "9.9.9"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        wait_for(60, "the scale set's model to name the new version", || {
            let v = arm.get(&vmss_id, "2024-07-01").unwrap_or_default();
            (v["tags"]["culvert:agent-version"] != "9.9.9").then(|| v["tags"].to_string())
        });

        // Peering through every state.
        let peer_rg = arm.resource_group(SUB, "rg-peer");
        let peer_args = |name: &str| -> Vec<String> {
            [
                "peering",
                "create",
                name,
                "--env",
                "byoc",
                "--peer-subscription",
                SUB,
                "--peer-tenant",
                "8e2f1c3a-5b6d-4e7f-8a9b-0c1d2e3f4a5b",
                "--peer-resource-group",
                "rg-peer",
                "--peer-vnet",
                "hubnet",
                "--peer-app-id",
                "3d4e5f60-7a8b-4c9d-8e0f-1a2b3c4d5e6f",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        let create = |name: &str| {
            let args = peer_args(name);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            stack.json(&refs)
        };
        // Nothing granted yet: the peer refused.
        let c = create("hub");
        assert_eq!(c["state"], "APPROVED", "{c}");
        assert!(
            c["peer_steps"]
                .as_str()
                .unwrap()
                .contains("az network vnet peering create"),
            "{c}"
        );
        let c = wait_connection(&stack, "hub", "REJECTED_BY_PEER");
        assert!(c["reason"].as_str().unwrap().contains("peer/action"), "{c}");
        assert_eq!(
            stack
                .culvert(&["peering", "delete", "hub", "--env", "byoc"])
                .code,
            0
        );
        // Granted on the resource group, but the VNet named does not exist.
        arm.role(
            &peer_rg,
            "peer-only",
            &["Microsoft.Network/virtualNetworks/peer/action".to_string()],
            &[&peer_rg],
            &principal,
            &[&peer_rg],
        );
        create("hub");
        let c = wait_connection(&stack, "hub", "INVALID_SPECIFICATION");
        assert!(c["reason"].as_str().unwrap().contains("hubnet"), "{c}");
        assert_eq!(
            stack
                .culvert(&["peering", "delete", "hub", "--env", "byoc"])
                .code,
            0
        );
        // The VNet exists: Culvert's side is created and waits for the peer's.
        arm.vnet(&peer_rg, "hubnet", &[("default", "10.30.0.0/24")]);
        create("hub");
        wait_connection(&stack, "hub", "PENDING_PEER");
        // The peer's last step: its side of the peering.
        let r = stack.culvert(&["local", "azure", "peer", "hub", "--env", "byoc"]);
        assert_eq!(r.code, 0, "local azure peer: {}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("peered"), "{}", r.stdout);
        wait_connection(&stack, "hub", "ACTIVE");
        let list = stack.json(&["peering", "list", "--env", "byoc"]);
        assert_eq!(list["items"][0]["state"], "ACTIVE", "{list}");

        let v = silent_validation.join().expect("the silent validation");
        assert_eq!(v["state"], "failed", "{v}");
        assert!(
            v.to_string()
                .contains(&format!("did not finish within {VALIDATION_TIMEOUT} s")),
            "{v}"
        );
        wait_for(
            30,
            "every container group to be deleted, the timed-out one too",
            || {
                let n = groups(&arm);
                (n != 0).then(|| format!("{n} group(s) left"))
            },
        );
        vmss_id
    });
    drop(silent);

    // Deleting the environment deletes its scale set.
    assert_eq!(
        stack
            .culvert(&["peering", "delete", "hub", "--env", "byoc"])
            .code,
        0
    );
    for c in ["orders", "wrongdb", "silent"] {
        let r = stack.culvert(&["connector", "delete", c]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let r = stack.culvert(&["env", "delete", "byoc"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    wait_for(60, "the scale set to be deleted", || {
        arm.get(&vmss_id, "2024-07-01").map(|v| v.to_string())
    });
}
