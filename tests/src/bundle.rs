//! Reading the bootstrap bundle's Terraform the way Terraform would.

/// The custom role's actions, read from the bundle's Terraform.
pub fn role_actions(main_tf: &str) -> Vec<String> {
    let body: hcl::Body = hcl::from_str(main_tf).expect("main.tf parses");
    for block in body.blocks() {
        if block.identifier() == "resource"
            && block.labels().first().map(|l| l.as_str()) == Some("azurerm_role_definition")
        {
            for inner in block.body().blocks() {
                if inner.identifier() == "permissions" {
                    for attr in inner.body().attributes() {
                        if attr.key() == "actions"
                            && let hcl::Expression::Array(items) = attr.expr()
                        {
                            return items
                                .iter()
                                .filter_map(|e| match e {
                                    hcl::Expression::String(s) => Some(s.clone()),
                                    _ => None,
                                })
                                .collect();
                        }
                    }
                }
            }
        }
    }
    panic!("no role definition with actions in main.tf")
}
