//! The rendered bootstrap bundle, parsed as HCL and checked the way Terraform would resolve it:
//! references, variables, the role, the count-gated parts, the names registration looks for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use culvert_byoc::bootstrap::{
    self, BUFFER_KEY_NAME, BootstrapInputs, CREDENTIALS_KEY_NAME, ExpectedResources, FIXES,
};
use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use hcl::expr::{Expression, ObjectKey, Operation, TraversalOperator};
use hcl::template::{Directive, Element};
use hcl::{Block, Body, Map, Structure, Template, Value};

/// The control plane's customer-scope ARM actions as the operation catalogue lists them
/// (each operation's action and linked actions, without the peer's `peer/action`); checked
/// against `culvert_arm::operations::customer_role_actions()` below.
const ROLE_ACTIONS: &[&str] = &[
    "Microsoft.ManagedIdentity/userAssignedIdentities/read",
    "Microsoft.Authorization/roleAssignments/read",
    "Microsoft.Compute/virtualMachineScaleSets/read",
    "Microsoft.Compute/virtualMachineScaleSets/write",
    "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
    "Microsoft.Network/virtualNetworks/subnets/join/action",
    "Microsoft.Network/networkSecurityGroups/join/action",
    "Microsoft.Compute/virtualMachineScaleSets/delete",
    "Microsoft.Compute/virtualMachineScaleSets/deallocate/action",
    "Microsoft.Compute/virtualMachineScaleSets/start/action",
    "Microsoft.Compute/virtualMachineScaleSets/instanceView/read",
    "Microsoft.Compute/virtualMachineScaleSets/manualUpgrade/action",
    "Microsoft.ContainerInstance/containerGroups/read",
    "Microsoft.ContainerInstance/containerGroups/write",
    "Microsoft.ContainerInstance/containerGroups/delete",
    "Microsoft.ContainerInstance/containerGroups/containers/logs/read",
    "Microsoft.Network/networkSecurityGroups/read",
    "Microsoft.Network/privateEndpoints/read",
    "Microsoft.Network/virtualNetworks/subnets/read",
    "Microsoft.Network/virtualNetworks/read",
    "Microsoft.Network/virtualNetworks/virtualNetworkPeerings/read",
    "Microsoft.Network/virtualNetworks/virtualNetworkPeerings/write",
    "Microsoft.Network/virtualNetworks/virtualNetworkPeerings/delete",
    "Microsoft.DBforPostgreSQL/flexibleServers/read",
    "Microsoft.DBforPostgreSQL/servers/read",
    "Microsoft.Sql/servers/read",
    "Microsoft.DBforMySQL/flexibleServers/read",
    "Microsoft.DBforMySQL/servers/read",
    "Microsoft.DBforMariaDB/servers/read",
];

const SUB: &str = "0b1f6471-1bf0-4dda-aec3-111122223333";

fn inputs(vnet_rg: &str, key_vault_id: Option<&str>) -> BootstrapInputs {
    let vnet = format!(
        "/subscriptions/{SUB}/resourceGroups/{vnet_rg}/providers/Microsoft.Network/virtualNetworks/main-vnet"
    );
    BootstrapInputs {
        environment_id: "7c9e6679-7425-40de-944b-e07fc1f90ae7".into(),
        environment_name: "Production EU".into(),
        subscription_id: SUB.into(),
        location: "westeurope".into(),
        resource_group: "culvert-prod".into(),
        subnet_ids: vec![format!("{vnet}/subnets/agents"), format!("{vnet}/subnets/agents-2")],
        vnet_id: vnet,
        key_vault_id: key_vault_id.map(str::to_string),
        external_id: "ext-4f9a0c2b7d1e".into(),
        culvert_tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
        culvert_app_id: "11111111-2222-3333-4444-555555555555".into(),
        culvert_principal_id: "66666666-7777-8888-9999-000000000000".into(),
        metadata_service_id: "/subscriptions/aaaaaaaa-0000-0000-0000-000000000000/resourceGroups/culvert-cp/providers/Microsoft.Network/privateLinkServices/culvert-metadata".into(),
        container_registry_id: "/subscriptions/aaaaaaaa-0000-0000-0000-000000000000/resourceGroups/culvert-cp/providers/Microsoft.ContainerRegistry/registries/culvertimages".into(),
        control_plane_ip_ranges: vec!["20.50.0.0/28".into(), "20.60.1.7/32".into()],
    }
}

const EXISTING_VAULT: &str = "/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/resourcegroups/security/providers/Microsoft.KeyVault/vaults/Corp-Vault";

/// Both shapes: the VNet in the environment's resource group with a new vault, and the VNet
/// elsewhere with an existing vault.
fn cases() -> Vec<(&'static str, BootstrapInputs)> {
    vec![
        (
            "same resource group, new vault",
            inputs("culvert-prod", None),
        ),
        (
            "VNet elsewhere, existing vault",
            inputs("network-rg", Some(EXISTING_VAULT)),
        ),
    ]
}

struct Parsed {
    main: Body,
    tfvars: BTreeMap<String, Value>,
    inputs: BootstrapInputs,
}

fn parse(inputs: BootstrapInputs) -> Parsed {
    let bundle = bootstrap::render(&inputs, ROLE_ACTIONS);
    let main = hcl::parse(bundle.file("main.tf").expect("main.tf")).expect("main.tf parses");
    let vars = hcl::parse(bundle.file("terraform.tfvars").expect("tfvars")).expect("tfvars parse");
    let tfvars = vars
        .attributes()
        .map(|a| {
            let v = a
                .expr()
                .evaluate(&Context::new())
                .expect("tfvars values are literals");
            (a.key().to_string(), v)
        })
        .collect();
    Parsed {
        main,
        tfvars,
        inputs,
    }
}

fn blocks<'a>(body: &'a Body, ident: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
    body.blocks().filter(move |b| b.identifier() == ident)
}

fn labels(b: &Block) -> Vec<&str> {
    b.labels().iter().map(|l| l.as_str()).collect()
}

fn block<'a>(body: &'a Body, ident: &str, want: &[&str]) -> &'a Block {
    body.blocks()
        .find(|b| b.identifier() == ident && labels(b) == want)
        .unwrap_or_else(|| panic!("no {ident} {want:?}"))
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes().find(|a| a.key() == key).map(|a| a.expr())
}

fn resource<'a>(p: &'a Parsed, kind: &str, name: &str) -> &'a Body {
    block(&p.main, "resource", &[kind, name]).body()
}

// ---------------------------------------------------------------------------------------
// References
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Refs {
    /// Root name and the attribute names that follow it.
    paths: Vec<Vec<String>>,
    funcs: BTreeSet<String>,
}

fn walk_template(t: &Template, bound: &[String], refs: &mut Refs) {
    for el in t.elements() {
        match el {
            Element::Literal(_) => {}
            Element::Interpolation(i) => walk(&i.expr, bound, refs),
            Element::Directive(d) => match d.as_ref() {
                Directive::If(d) => {
                    walk(&d.cond_expr, bound, refs);
                    walk_template(&d.true_template, bound, refs);
                    if let Some(f) = &d.false_template {
                        walk_template(f, bound, refs);
                    }
                }
                Directive::For(d) => {
                    walk(&d.collection_expr, bound, refs);
                    let mut inner = bound.to_vec();
                    inner.push(d.value_var.to_string());
                    inner.extend(d.key_var.iter().map(|k| k.to_string()));
                    walk_template(&d.template, &inner, refs);
                }
            },
        }
    }
}

fn walk(e: &Expression, bound: &[String], refs: &mut Refs) {
    match e {
        Expression::Variable(v) if !bound.iter().any(|b| b == v.as_str()) => {
            refs.paths.push(vec![v.to_string()]);
        }
        Expression::Traversal(t) => {
            match &t.expr {
                Expression::Variable(v) if !bound.iter().any(|b| b == v.as_str()) => {
                    let mut path = vec![v.to_string()];
                    for op in &t.operators {
                        match op {
                            TraversalOperator::GetAttr(id) => path.push(id.to_string()),
                            _ => break,
                        }
                    }
                    refs.paths.push(path);
                }
                Expression::Variable(_) => {}
                other => walk(other, bound, refs),
            }
            for op in &t.operators {
                if let TraversalOperator::Index(ix) = op {
                    walk(ix, bound, refs);
                }
            }
        }
        Expression::Array(items) => items.iter().for_each(|i| walk(i, bound, refs)),
        Expression::Object(map) => {
            for (k, v) in map {
                if let ObjectKey::Expression(k) = k {
                    walk(k, bound, refs);
                }
                walk(v, bound, refs);
            }
        }
        Expression::TemplateExpr(t) => {
            let template = Template::from_expr(t).expect("template parses");
            walk_template(&template, bound, refs);
        }
        Expression::FuncCall(f) => {
            refs.funcs.insert(f.name.name.to_string());
            f.args.iter().for_each(|a| walk(a, bound, refs));
        }
        Expression::Parenthesis(e) => walk(e, bound, refs),
        Expression::Conditional(c) => {
            walk(&c.cond_expr, bound, refs);
            walk(&c.true_expr, bound, refs);
            walk(&c.false_expr, bound, refs);
        }
        Expression::Operation(op) => match op.as_ref() {
            Operation::Unary(u) => walk(&u.expr, bound, refs),
            Operation::Binary(b) => {
                walk(&b.lhs_expr, bound, refs);
                walk(&b.rhs_expr, bound, refs);
            }
        },
        Expression::ForExpr(f) => {
            walk(&f.collection_expr, bound, refs);
            let mut inner = bound.to_vec();
            inner.push(f.value_var.to_string());
            inner.extend(f.key_var.iter().map(|k| k.to_string()));
            for e in [
                f.key_expr.as_ref(),
                Some(&f.value_expr),
                f.cond_expr.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                walk(e, &inner, refs);
            }
        }
        _ => {}
    }
}

fn walk_body(body: &Body, refs: &mut Refs) {
    for s in body.iter() {
        match s {
            Structure::Attribute(a) => walk(a.expr(), &[], refs),
            Structure::Block(b) => walk_body(b.body(), refs),
        }
    }
}

fn refs_of(body: &Body) -> Refs {
    let mut refs = Refs::default();
    walk_body(body, &mut refs);
    refs
}

fn path_of(e: &Expression) -> Vec<String> {
    let mut refs = Refs::default();
    walk(e, &[], &mut refs);
    assert_eq!(refs.paths.len(), 1, "expected one reference in {e:?}");
    refs.paths.remove(0)
}

fn declared(p: &Parsed, ident: &str) -> BTreeSet<(String, String)> {
    blocks(&p.main, ident)
        .map(|b| {
            let l = labels(b);
            (l[0].to_string(), l.get(1).unwrap_or(&"").to_string())
        })
        .collect()
}

fn variables(p: &Parsed) -> BTreeMap<String, bool> {
    blocks(&p.main, "variable")
        .map(|b| {
            (
                labels(b)[0].to_string(),
                attr(b.body(), "default").is_some(),
            )
        })
        .collect()
}

fn locals(p: &Parsed) -> Vec<(String, Expression)> {
    blocks(&p.main, "locals")
        .flat_map(|b| b.body().attributes())
        .map(|a| (a.key().to_string(), a.expr().clone()))
        .collect()
}

#[test]
fn the_local_action_list_is_the_catalogue_and_renders_as_the_role() {
    let catalogue = culvert_arm::operations::customer_role_actions();
    let lower = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|a| a.to_lowercase()).collect() };
    assert_eq!(lower(ROLE_ACTIONS), lower(&catalogue));
    // What the control plane will render, with the real list.
    let bundle = bootstrap::render(&inputs("culvert-prod", None), &catalogue);
    let main = hcl::parse(bundle.file("main.tf").unwrap()).unwrap();
    let role = block(
        &main,
        "resource",
        &["azurerm_role_definition", "control_plane"],
    );
    let actions = attr(block(role.body(), "permissions", &[]).body(), "actions")
        .unwrap()
        .evaluate(&Context::new())
        .unwrap();
    let actions: Vec<&str> = actions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(actions, catalogue);
}

#[test]
fn main_tf_and_tfvars_parse_and_every_reference_resolves() {
    for (case, inputs) in cases() {
        let p = parse(inputs);
        let vars = variables(&p);
        let local_names: BTreeSet<String> = locals(&p).into_iter().map(|(k, _)| k).collect();
        let resources = declared(&p, "resource");
        let data = declared(&p, "data");
        // References made outside the variable blocks (whose validations name their own variable).
        let mut outside = Body::default();
        for s in p.main.iter() {
            if !matches!(s, Structure::Block(b) if b.identifier() == "variable") {
                outside.0.push(s.clone());
            }
        }
        let refs = refs_of(&outside);
        let mut used_vars = BTreeSet::new();
        for path in &refs.paths {
            let root = path[0].as_str();
            let at = |i: usize| path.get(i).map(String::as_str).unwrap_or("");
            match root {
                "var" => {
                    assert!(
                        vars.contains_key(at(1)),
                        "{case}: var.{} is not declared",
                        at(1)
                    );
                    used_vars.insert(at(1).to_string());
                }
                "local" => assert!(
                    local_names.contains(at(1)),
                    "{case}: local.{} is not declared",
                    at(1)
                ),
                "data" => assert!(
                    data.contains(&(at(1).to_string(), at(2).to_string())),
                    "{case}: data.{}.{} is not declared",
                    at(1),
                    at(2)
                ),
                "each" | "count" | "self" => {}
                r if r.starts_with("azurerm_") => assert!(
                    resources.contains(&(r.to_string(), at(1).to_string())),
                    "{case}: {r}.{} is not declared",
                    at(1)
                ),
                other => panic!("{case}: unknown reference root `{other}` in {path:?}"),
            }
        }
        let unused: Vec<&String> = vars.keys().filter(|v| !used_vars.contains(*v)).collect();
        assert!(
            unused.is_empty(),
            "{case}: declared but never used: {unused:?}"
        );
        // tfvars: only declared variables, and every variable without a default.
        for key in p.tfvars.keys() {
            assert!(
                vars.contains_key(key),
                "{case}: tfvars sets undeclared `{key}`"
            );
        }
        for (name, has_default) in &vars {
            assert!(
                *has_default || p.tfvars.contains_key(name),
                "{case}: required `{name}` not in tfvars"
            );
        }
        // Terraform functions only, and no timestamp() anywhere.
        let known: BTreeSet<&str> = [
            "alltrue",
            "can",
            "cidrhost",
            "concat",
            "element",
            "endswith",
            "index",
            "length",
            "lower",
            "one",
            "regex",
            "replace",
            "split",
            "startswith",
            "strcontains",
            "substr",
            "toset",
            // The type constraint `list(string)`.
            "list",
        ]
        .into();
        let all = refs_of(&p.main);
        for f in &all.funcs {
            assert!(
                known.contains(f.as_str()),
                "{case}: function {f}() is not one this test knows"
            );
        }
        assert!(!all.funcs.contains("timestamp"));
    }
}

#[test]
fn the_role_holds_exactly_the_catalogue_and_no_condition() {
    for (case, inputs) in cases() {
        let p = parse(inputs);
        let role = resource(&p, "azurerm_role_definition", "control_plane");
        let perms = block(role, "permissions", &[]).body();
        let list = |key: &str| -> Vec<String> {
            let v = attr(perms, key)
                .unwrap_or_else(|| panic!("permissions.{key}"))
                .evaluate(&Context::new())
                .expect("literal list");
            v.as_array()
                .expect("a list")
                .iter()
                .map(|s| s.as_str().expect("strings").to_string())
                .collect()
        };
        let actions = list("actions");
        let set: BTreeSet<String> = actions.iter().map(|a| a.to_lowercase()).collect();
        assert_eq!(set.len(), actions.len(), "{case}: duplicate actions");
        let want: BTreeSet<String> = ROLE_ACTIONS.iter().map(|a| a.to_lowercase()).collect();
        assert_eq!(set, want, "{case}");
        let data_actions = list("data_actions");
        assert!(list("not_actions").is_empty());
        // Conditions constrain data actions only; with none, no assignment may carry one, and
        // a condition could only name data actions the role holds.
        for b in blocks(&p.main, "resource").filter(|b| labels(b)[0] == "azurerm_role_assignment") {
            let Some(role_ref) = attr(b.body(), "role_definition_id") else {
                continue;
            };
            if path_of(role_ref)[..2] != ["azurerm_role_definition", "control_plane"] {
                continue;
            }
            match attr(b.body(), "condition") {
                None => assert!(
                    data_actions.is_empty(),
                    "{case}: data actions without a condition"
                ),
                Some(c) => {
                    let text = c.evaluate(&Context::new()).unwrap().to_string();
                    for part in text.split("ActionMatches{'").skip(1) {
                        let action = part.split('\'').next().unwrap();
                        assert!(
                            data_actions.iter().any(|d| d == action),
                            "{case}: {action} not a data action"
                        );
                    }
                    assert!(attr(b.body(), "condition_version").is_some());
                }
            }
        }
        // Defined where it is assigned, assignable there.
        assert_eq!(
            path_of(attr(role, "scope").unwrap()),
            ["data", "azurerm_resource_group", "target", "id"]
        );
    }
    // A repeated action (in any case) is written once.
    let mut doubled = ROLE_ACTIONS.to_vec();
    doubled.push("microsoft.network/virtualnetworks/read");
    let tf = bootstrap::main_tf(&doubled);
    assert_eq!(
        tf.to_lowercase()
            .matches("\"microsoft.network/virtualnetworks/read\"")
            .count(),
        1
    );
}

// ---------------------------------------------------------------------------------------
// Evaluation with the tfvars
// ---------------------------------------------------------------------------------------

fn s(args: &FuncArgs, i: usize) -> String {
    args[i].as_str().unwrap_or_default().to_string()
}

fn n(args: &FuncArgs, i: usize) -> i64 {
    args[i]
        .as_number()
        .and_then(|n| n.as_i64())
        .unwrap_or_default()
}

fn context(p: &Parsed) -> Context<'static> {
    let mut ctx = Context::new();
    let str1 = || FuncDef::builder().param(ParamType::String);
    ctx.declare_func(
        "lower",
        str1().build(|a| Ok(s(&a, 0).to_lowercase().into())),
    );
    ctx.declare_func(
        "split",
        str1().param(ParamType::String).build(|a| {
            Ok(Value::Array(
                s(&a, 1).split(s(&a, 0).as_str()).map(Value::from).collect(),
            ))
        }),
    );
    ctx.declare_func(
        "replace",
        str1()
            .params([ParamType::String, ParamType::String])
            .build(|a| Ok(s(&a, 0).replace(&s(&a, 1), &s(&a, 2)).into())),
    );
    ctx.declare_func(
        "substr",
        str1()
            .params([ParamType::Number, ParamType::Number])
            .build(|a| {
                let text: String = s(&a, 0)
                    .chars()
                    .skip(n(&a, 1) as usize)
                    .take(n(&a, 2) as usize)
                    .collect();
                Ok(text.into())
            }),
    );
    ctx.declare_func(
        "startswith",
        str1()
            .param(ParamType::String)
            .build(|a| Ok(s(&a, 0).starts_with(&s(&a, 1)).into())),
    );
    ctx.declare_func(
        "endswith",
        str1()
            .param(ParamType::String)
            .build(|a| Ok(s(&a, 0).ends_with(&s(&a, 1)).into())),
    );
    ctx.declare_func(
        "strcontains",
        str1()
            .param(ParamType::String)
            .build(|a| Ok(s(&a, 0).contains(&s(&a, 1)).into())),
    );
    ctx.declare_func(
        "index",
        FuncDef::builder()
            .params([ParamType::array_of(ParamType::Any), ParamType::Any])
            .build(|a| {
                let list = a[0].as_array().unwrap();
                let i = list
                    .iter()
                    .position(|v| *v == a[1])
                    .ok_or("value not in list")?;
                Ok((i as u64).into())
            }),
    );
    ctx.declare_func(
        "length",
        FuncDef::builder().param(ParamType::Any).build(|a| {
            Ok(match &a[0] {
                Value::Array(v) => v.len() as u64,
                Value::String(s) => s.chars().count() as u64,
                Value::Object(m) => m.len() as u64,
                _ => return Err("length of a scalar".into()),
            }
            .into())
        }),
    );
    ctx.declare_func(
        "element",
        FuncDef::builder()
            .params([ParamType::array_of(ParamType::Any), ParamType::Number])
            .build(|a| {
                let list = a[0].as_array().unwrap();
                Ok(list[n(&a, 1) as usize % list.len()].clone())
            }),
    );
    ctx.declare_func(
        "concat",
        FuncDef::builder()
            .variadic_param(ParamType::array_of(ParamType::Any))
            .build(|a| {
                Ok(Value::Array(
                    a.iter()
                        .flat_map(|v| v.as_array().unwrap().clone())
                        .collect(),
                ))
            }),
    );
    ctx.declare_func(
        "toset",
        FuncDef::builder()
            .param(ParamType::array_of(ParamType::Any))
            .build(|a| {
                let mut out: Vec<Value> = Vec::new();
                for v in a[0].as_array().unwrap() {
                    if !out.contains(v) {
                        out.push(v.clone());
                    }
                }
                Ok(Value::Array(out))
            }),
    );
    ctx.declare_func(
        "alltrue",
        FuncDef::builder()
            .param(ParamType::array_of(ParamType::Bool))
            .build(|a| {
                Ok(a[0]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|v| v.as_bool() == Some(true))
                    .into())
            }),
    );
    // Variables: tfvars over defaults.
    let mut var = Map::new();
    for b in blocks(&p.main, "variable") {
        if let Some(d) = attr(b.body(), "default") {
            var.insert(
                labels(b)[0].to_string(),
                d.evaluate(&Context::new()).unwrap(),
            );
        }
    }
    for (k, v) in &p.tfvars {
        var.insert(k.clone(), v.clone());
    }
    ctx.declare_var("var", Value::Object(var));
    // What the data sources would return.
    let i = &p.inputs;
    let obj = |pairs: &[(&str, Value)]| {
        Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    };
    let rg_id = format!(
        "/subscriptions/{}/resourceGroups/{}",
        i.subscription_id, i.resource_group
    );
    ctx.declare_var(
        "data",
        obj(&[
            (
                "azurerm_resource_group",
                obj(&[("target", obj(&[("id", rg_id.into())]))]),
            ),
            (
                "azurerm_virtual_network",
                obj(&[("agents", obj(&[("id", i.vnet_id.clone().into())]))]),
            ),
        ]),
    );
    ctx.declare_var(
        "azurerm_private_endpoint",
        obj(&[(
            "metadata",
            obj(&[(
                "private_service_connection",
                Value::Array(vec![obj(&[("private_ip_address", "10.0.1.4".into())])]),
            )]),
        )]),
    );
    // Locals, in as many passes as their references to each other need; those that depend on
    // resources stay unevaluated.
    let all = locals(p);
    let mut local = Map::new();
    loop {
        ctx.declare_var("local", Value::Object(local.clone()));
        let before = local.len();
        for (k, e) in &all {
            if !local.contains_key(k)
                && let Ok(v) = e.evaluate(&ctx)
            {
                local.insert(k.clone(), v);
            }
        }
        if local.len() == before {
            break;
        }
    }
    ctx.declare_var("local", Value::Object(local));
    ctx
}

fn eval(p: &Parsed, ctx: &Context, e: &Expression) -> Value {
    e.evaluate(ctx)
        .unwrap_or_else(|err| panic!("{:?}: {err}", p.inputs.environment_name))
}

fn eval_str(p: &Parsed, ctx: &Context, body: &Body, key: &str) -> String {
    let e = attr(body, key).unwrap_or_else(|| panic!("no {key}"));
    eval(p, ctx, e)
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string"))
        .to_string()
}

fn count(p: &Parsed, ctx: &Context, kind: &str, name: &str) -> u64 {
    let body = resource(p, kind, name);
    attr(body, "count")
        .map(|e| {
            eval(p, ctx, e)
                .as_number()
                .and_then(|n| n.as_u64())
                .unwrap()
        })
        .unwrap_or(1)
}

#[test]
fn count_gated_parts_follow_the_inputs() {
    for (case, inputs) in cases() {
        let other_rg = !inputs.vnet_id.to_lowercase().contains(&format!(
            "/resourcegroups/{}/",
            inputs.resource_group.to_lowercase()
        ));
        let new_vault = inputs.key_vault_id.is_none();
        let p = parse(inputs);
        let ctx = context(&p);
        let vault = u64::from(new_vault);
        assert_eq!(
            count(&p, &ctx, "azurerm_key_vault", "credentials"),
            vault,
            "{case}"
        );
        assert_eq!(
            count(&p, &ctx, "azurerm_key_vault_access_policy", "deployer"),
            vault,
            "{case}"
        );
        assert_eq!(
            count(&p, &ctx, "azurerm_role_assignment", "control_plane_vnet"),
            u64::from(other_rg),
            "{case}"
        );
        // Assignable scopes: the environment's resource group, and the VNet's when it differs.
        let role = resource(&p, "azurerm_role_definition", "control_plane");
        let scopes: Vec<String> = eval(&p, &ctx, attr(role, "assignable_scopes").unwrap())
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let rg_scope = format!("/subscriptions/{SUB}/resourceGroups/culvert-prod");
        assert_eq!(scopes[0], rg_scope, "{case}");
        // What the API tells the local stand-in's `apply-bootstrap` is what main.tf does.
        let (assignable, assigned_at) = bootstrap::role_scopes(&p.inputs);
        assert_eq!(assignable, scopes, "{case}");
        let mut at = vec![rg_scope.clone()];
        if other_rg {
            at.push(p.inputs.vnet_id.clone());
        }
        assert_eq!(assigned_at, at, "{case}");
        if other_rg {
            assert_eq!(
                scopes,
                [
                    rg_scope,
                    format!("/subscriptions/{SUB}/resourceGroups/network-rg")
                ]
            );
            let vnet_ra = resource(&p, "azurerm_role_assignment", "control_plane_vnet");
            assert_eq!(eval_str(&p, &ctx, vnet_ra, "scope"), p.inputs.vnet_id);
        } else {
            assert_eq!(scopes.len(), 1, "{case}");
        }
        // Keys go to the vault in use either way.
        for key in ["credentials", "buffer"] {
            let body = resource(&p, "azurerm_key_vault_key", key);
            assert_eq!(
                path_of(attr(body, "key_vault_id").unwrap()),
                ["local", "key_vault_id"]
            );
        }
        if !new_vault {
            assert_eq!(
                ctx_local(&ctx, "key_vault_id"),
                Some(EXISTING_VAULT.to_string()),
                "{case}"
            );
            assert_eq!(
                ctx_local(&ctx, "key_vault_uri"),
                Some("https://corp-vault.vault.azure.net/".to_string())
            );
        }
        // The VNet's preconditions hold for these inputs.
        let vnet = block(&p.main, "data", &["azurerm_virtual_network", "agents"]).body();
        let lifecycle = block(vnet, "lifecycle", &[]).body();
        let mut checked = 0;
        for pre in blocks(lifecycle, "precondition") {
            let ok = eval(&p, &ctx, attr(pre.body(), "condition").unwrap());
            assert_eq!(ok, Value::Bool(true), "{case}: precondition fails");
            checked += 1;
        }
        assert_eq!(checked, 2);
    }
}

fn ctx_local(ctx: &Context, key: &str) -> Option<String> {
    let e: Expression = hcl::parse(&format!("x = local.{key}"))
        .unwrap()
        .attributes()
        .next()?
        .expr()
        .clone();
    e.evaluate(ctx).ok()?.as_str().map(str::to_string)
}

#[test]
fn preconditions_reject_a_subnet_of_another_vnet() {
    let mut i = inputs("culvert-prod", None);
    i.subnet_ids.push(format!(
        "/subscriptions/{SUB}/resourceGroups/culvert-prod/providers/Microsoft.Network/virtualNetworks/other/subnets/x"
    ));
    assert!(i.validate().is_err());
    let p = parse(i);
    let ctx = context(&p);
    let vnet = block(&p.main, "data", &["azurerm_virtual_network", "agents"]).body();
    let results: Vec<Value> = blocks(block(vnet, "lifecycle", &[]).body(), "precondition")
        .map(|pre| eval(&p, &ctx, attr(pre.body(), "condition").unwrap()))
        .collect();
    assert!(results.contains(&Value::Bool(false)), "{results:?}");
}

#[test]
fn resource_names_agree_with_the_hcl() {
    for (case, inputs) in cases() {
        let expected: ExpectedResources = bootstrap::resource_names(&inputs);
        let p = parse(inputs);
        let ctx = context(&p);
        let id_of = |kind: &str, name: &str, provider: &str| {
            let body = resource(&p, kind, name);
            format!(
                "/subscriptions/{}/resourceGroups/{}/providers/{provider}/{}",
                p.inputs.subscription_id,
                eval_str(&p, &ctx, body, "resource_group_name"),
                eval_str(&p, &ctx, body, "name")
            )
        };
        assert_eq!(
            expected.agent_identity_id,
            id_of(
                "azurerm_user_assigned_identity",
                "agent",
                "Microsoft.ManagedIdentity/userAssignedIdentities"
            ),
            "{case}"
        );
        assert_eq!(
            expected.validation_identity_id,
            id_of(
                "azurerm_user_assigned_identity",
                "validation",
                "Microsoft.ManagedIdentity/userAssignedIdentities"
            ),
            "{case}"
        );
        assert_eq!(
            expected.agent_nsg_id,
            id_of(
                "azurerm_network_security_group",
                "agent",
                "Microsoft.Network/networkSecurityGroups"
            ),
            "{case}"
        );
        assert_eq!(
            expected.private_endpoint_id,
            id_of(
                "azurerm_private_endpoint",
                "metadata",
                "Microsoft.Network/privateEndpoints"
            ),
            "{case}"
        );
        if p.inputs.key_vault_id.is_none() {
            assert_eq!(
                expected.key_vault_id,
                id_of(
                    "azurerm_key_vault",
                    "credentials",
                    "Microsoft.KeyVault/vaults"
                ),
                "{case}"
            );
            let name = ctx_local(&ctx, "key_vault_name").unwrap();
            assert!(
                name.len() <= 24 && name.starts_with("culvert-kv-"),
                "{name}"
            );
            assert_eq!(
                expected.key_vault_uri,
                format!("https://{name}.vault.azure.net/")
            );
        } else {
            assert_eq!(expected.key_vault_id, EXISTING_VAULT);
            assert_eq!(
                Some(expected.key_vault_uri.clone()),
                ctx_local(&ctx, "key_vault_uri")
            );
        }
        let role = resource(&p, "azurerm_role_definition", "control_plane");
        assert_eq!(
            expected.role_definition_name,
            eval_str(&p, &ctx, role, "name")
        );
    }
}

#[test]
fn private_endpoint_is_a_manual_connection_named_for_the_environment() {
    let p = parse(inputs("culvert-prod", None));
    let ctx = context(&p);
    let pe = resource(&p, "azurerm_private_endpoint", "metadata");
    let conn = block(pe, "private_service_connection", &[]).body();
    assert_eq!(
        eval(&p, &ctx, attr(conn, "is_manual_connection").unwrap()),
        Value::Bool(true)
    );
    assert!(attr(conn, "subresource_names").is_none());
    assert_eq!(
        eval_str(&p, &ctx, conn, "request_message"),
        format!(
            "culvert:{}:{}",
            p.inputs.environment_id, p.inputs.external_id
        )
    );
    assert!(eval_str(&p, &ctx, conn, "request_message").len() <= 140);
    assert_eq!(
        path_of(attr(conn, "private_connection_resource_id").unwrap()),
        ["var", "culvert_metadata_service_id"]
    );
    // The agents' HTTPS rule targets the endpoint's address.
    let rule = resource(&p, "azurerm_network_security_rule", "agent_metadata");
    assert_eq!(
        eval_str(&p, &ctx, rule, "destination_address_prefix"),
        "10.0.1.4/32"
    );
    assert_eq!(
        path_of(attr(rule, "network_security_group_name").unwrap()),
        ["azurerm_network_security_group", "agent", "name"]
    );
}

/// Key Vault operations the shared client performs (`self.client.NAME(`), from its source.
fn keyvault_client_calls() -> BTreeSet<String> {
    let src = read(&repo().join("crates/azure/src/keyvault.rs"));
    let flat: String = src.split_whitespace().collect();
    flat.split("self.client.")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sources(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.push_str(&sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&read(&path));
        }
    }
    out
}

#[test]
fn key_vault_permissions_are_what_the_code_uses() {
    // The client performs exactly these operations; a new one (get_key, sign...) needs its
    // permission added below and in main.tf.
    let calls = keyvault_client_calls();
    assert_eq!(
        calls,
        ["decrypt", "encrypt", "unwrap_key", "wrap_key"]
            .map(String::from)
            .into(),
        "crates/azure/src/keyvault.rs changed the Key Vault operations it performs"
    );
    // Who uses which key: the control plane seals credentials only (encrypt); agents open
    // credentials (decrypt) and wrap and unwrap buffer keys; validations open credentials.
    let functions = sources(&repo().join("functions/src"));
    assert!(functions.contains("KeyUse::Secrets") && !functions.contains("KeyUse::DataKeys"));
    let agent = sources(&repo().join("agent-host/src"));
    assert!(agent.contains("KeyUse::Secrets") && agent.contains("KeyUse::DataKeys"));
    // Secrets: only the control plane reads them, from its own vault (master keys), never
    // from the environment's.
    assert!(!agent.contains("VaultSecret"));
    assert!(read(&repo().join("functions/src/env_keys.rs")).contains("KeyVaultKey"));
    assert!(!read(&repo().join("functions/src/env_keys.rs")).contains("VaultSecret"));
    let want: [(&str, &[&str], Vec<&str>); 3] = [
        (
            "control_plane",
            &["Encrypt"],
            vec!["var", "culvert_principal_id"],
        ),
        (
            "agent",
            &["Decrypt", "WrapKey", "UnwrapKey"],
            vec!["azurerm_user_assigned_identity", "agent", "principal_id"],
        ),
        (
            "validation",
            &["Decrypt"],
            vec![
                "azurerm_user_assigned_identity",
                "validation",
                "principal_id",
            ],
        ),
    ];
    for (case, inputs) in cases() {
        let p = parse(inputs);
        let ctx = context(&p);
        for (name, perms, principal) in &want {
            let body = resource(&p, "azurerm_key_vault_access_policy", name);
            let got: Vec<String> = eval(&p, &ctx, attr(body, "key_permissions").unwrap())
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            assert_eq!(got, *perms, "{case}: {name}");
            assert!(
                attr(body, "secret_permissions").is_none(),
                "{case}: {name} gets secrets"
            );
            assert_eq!(
                path_of(attr(body, "tenant_id").unwrap()),
                ["data", "azurerm_client_config", "current", "tenant_id"],
                "{case}: {name}: the policy's tenant is the vault's"
            );
            assert_eq!(
                path_of(attr(body, "object_id").unwrap()),
                *principal,
                "{case}: {name}"
            );
            assert_eq!(
                path_of(attr(body, "key_vault_id").unwrap()),
                ["local", "key_vault_id"]
            );
        }
        // The keys carry the names the code opens, each limited to its operations.
        let keyvault = read(&repo().join("crates/azure/src/keyvault.rs"));
        for (res, name, ops) in [
            ("credentials", CREDENTIALS_KEY_NAME, ["encrypt", "decrypt"]),
            ("buffer", BUFFER_KEY_NAME, ["wrapKey", "unwrapKey"]),
        ] {
            assert!(
                keyvault.contains(&format!("= \"{name}\";")),
                "{name} is not the code's key name"
            );
            let body = resource(&p, "azurerm_key_vault_key", res);
            assert_eq!(eval_str(&p, &ctx, body, "name"), name);
            assert_eq!(
                eval(&p, &ctx, attr(body, "key_opts").unwrap()),
                Value::from(ops.to_vec())
            );
        }
        // The vault's firewall admits the control plane, written the way Key Vault takes it.
        if p.inputs.key_vault_id.is_none() {
            let kv = resource(&p, "azurerm_key_vault", "credentials");
            let acl = block(kv, "network_acls", &[]).body();
            let rules = eval(&p, &ctx, attr(acl, "ip_rules").unwrap());
            assert_eq!(
                rules,
                Value::from(vec!["20.50.0.0/28", "20.60.1.7"]),
                "{case}"
            );
            assert_eq!(eval_str(&p, &ctx, acl, "default_action"), "Deny");
        }
    }
}

#[test]
fn identities_nsg_association_and_registry_pull_exist() {
    let p = parse(inputs("network-rg", None));
    let ctx = context(&p);
    for name in ["agent", "validation"] {
        resource(&p, "azurerm_user_assigned_identity", name);
        let pull = resource(&p, "azurerm_role_assignment", &format!("{name}_acr_pull"));
        assert_eq!(eval_str(&p, &ctx, pull, "role_definition_name"), "AcrPull");
        assert_eq!(
            eval_str(&p, &ctx, pull, "scope"),
            p.inputs.container_registry_id
        );
        assert_eq!(
            path_of(attr(pull, "principal_id").unwrap()),
            ["azurerm_user_assigned_identity", name, "principal_id"]
        );
    }
    let assoc = resource(
        &p,
        "azurerm_subnet_network_security_group_association",
        "agent",
    );
    let subnets = eval(&p, &ctx, attr(assoc, "for_each").unwrap());
    assert_eq!(subnets, Value::from(p.inputs.subnet_ids.clone()));
    assert_eq!(
        path_of(attr(assoc, "subnet_id").unwrap()),
        ["each", "value"]
    );
    assert_eq!(
        path_of(attr(assoc, "network_security_group_id").unwrap()),
        ["azurerm_network_security_group", "agent", "id"]
    );
    // Connector rules are added to this NSG later: no inline rules that would remove them.
    assert!(
        blocks(
            resource(&p, "azurerm_network_security_group", "agent"),
            "security_rule"
        )
        .next()
        .is_none()
    );
    // The control plane's assignment goes to Culvert's principal on the resource group.
    let ra = resource(&p, "azurerm_role_assignment", "control_plane");
    assert_eq!(
        path_of(attr(ra, "principal_id").unwrap()),
        ["var", "culvert_principal_id"]
    );
    assert_eq!(
        path_of(attr(ra, "scope").unwrap()),
        ["data", "azurerm_resource_group", "target", "id"]
    );
    // The provider applies to the subscription in tfvars, whatever the CLI has selected.
    let provider = block(&p.main, "provider", &["azurerm"]).body();
    assert_eq!(
        path_of(attr(provider, "subscription_id").unwrap()),
        ["var", "subscription_id"]
    );
    assert!(
        block(&p.main, "terraform", &[])
            .body()
            .blocks()
            .all(|b| { attr(b.body(), "azuread").is_none() })
    );
}

#[test]
fn outputs_carry_what_registration_needs() {
    let p = parse(inputs("culvert-prod", None));
    let outputs: BTreeSet<String> = blocks(&p.main, "output")
        .map(|b| labels(b)[0].to_string())
        .collect();
    for want in [
        "control_plane_role_definition_id",
        "control_plane_role_assignment_id",
        "control_plane_vnet_role_assignment_id",
        "agent_identity_resource_id",
        "agent_identity_client_id",
        "agent_identity_principal_id",
        "validation_identity_resource_id",
        "validation_identity_client_id",
        "validation_identity_principal_id",
        "key_vault_id",
        "key_vault_uri",
        "credentials_key_id",
        "buffer_key_id",
        "metadata_endpoint_id",
        "metadata_endpoint_ip",
        "agent_nsg_id",
    ] {
        assert!(outputs.contains(want), "no output {want}");
    }
    for b in blocks(&p.main, "output") {
        let refs = refs_of(b.body());
        assert!(
            !refs.funcs.contains("timestamp"),
            "output {} uses timestamp()",
            labels(b)[0]
        );
    }
}

#[test]
fn tfvars_round_trip_awkward_values() {
    let mut i = inputs("culvert-prod", None);
    i.environment_name = "Q\"uote\n${not.a.ref} %{if x}".into();
    i.external_id = "a\"b\\c${x}%{y}\n\t\u{7}é".into();
    i.control_plane_ip_ranges = vec![];
    let bundle = bootstrap::render(&i, ROLE_ACTIONS);
    let p = parse(i.clone());
    assert_eq!(p.tfvars["external_id"], Value::from(i.external_id.as_str()));
    assert_eq!(p.tfvars["vnet_id"], Value::from(i.vnet_id.as_str()));
    assert_eq!(
        p.tfvars["private_subnet_ids"],
        Value::from(i.subnet_ids.clone())
    );
    assert_eq!(p.tfvars["credentials_key_vault_id"], Value::from(""));
    assert_eq!(p.tfvars["control_plane_ip_ranges"], Value::Array(vec![]));
    // The name only appears in comments, on one line.
    let tfvars = bundle.file("terraform.tfvars").unwrap();
    assert!(
        tfvars
            .lines()
            .next()
            .unwrap()
            .contains("Q\"uote ${not.a.ref}")
    );
    assert!(
        i.validate().is_err(),
        "the external id is not one the module accepts"
    );
}

#[test]
fn readme_walks_through_the_apply_and_lists_every_fix() {
    let i = inputs("network-rg", None);
    let bundle = bootstrap::render(&i, ROLE_ACTIONS);
    let names: Vec<&str> = bundle.files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["main.tf", "terraform.tfvars", "README.md"]);
    let readme = bundle.file("README.md").unwrap();
    for step in [
        "az login",
        "az account show",
        &format!("az account set --subscription {SUB}"),
        &format!("az ad sp create --id {}", i.culvert_app_id),
        "terraform init",
        "terraform apply",
        "## What happens next",
        "## Differences from the published guide",
        "## Why the role assignment has no condition",
    ] {
        assert!(readme.contains(step), "README lacks {step}");
    }
    for fix in FIXES {
        assert!(readme.contains(fix), "README lacks the fix: {fix}");
    }
    assert!(FIXES.len() >= 20);
    for (name, content) in &bundle.files {
        assert!(
            !content.to_lowercase().contains("supermetal"),
            "{name} names the guide's vendor"
        );
    }
    assert_eq!(i.validate(), Ok(()));
}
