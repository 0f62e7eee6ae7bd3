//! What each path and method does, and the RBAC action it needs.
//!
//! Actions follow Azure's naming: `{ns}/{types}/read|write|delete` on a resource,
//! `{ns}/{types}/{name}/action` for `POST .../{name}`, `{ns}/{types}/read` for a list or a view
//! such as `.../instanceView`, `Microsoft.Resources/subscriptions/resourceGroups/...` for
//! resource groups. Operation status polls need no permission.

use super::error::ArmError;
use super::ids::{self, Target};
use super::{Reply, Request, rbac, resources};
use axum::http::{Method, StatusCode};

/// Routes one authenticated request for `path`.
pub fn route(req: &Request<'_>, method: &Method, path: &str) -> Result<Reply, ArmError> {
    let target = ids::parse(path).ok_or_else(|| {
        ArmError::not_found(
            "NotFound",
            format!("No HTTP resource was found that matches the request URI '{path}'."),
        )
    })?;
    if let Some(sub) = target.subscription()
        && req.svc.subscription(sub).is_none()
    {
        return Err(ArmError::not_found(
            "SubscriptionNotFound",
            format!("The subscription '{sub}' could not be found."),
        ));
    }
    match target {
        Target::Subscriptions => {
            only(method, &[Method::GET])?;
            Ok(resources::list_subscriptions(req))
        }
        Target::Subscription(s) => {
            only(method, &[Method::GET])?;
            let scope = format!("/subscriptions/{s}");
            authorize(req, "Microsoft.Resources/subscriptions/read", &scope)?;
            Ok(resources::subscription(req, &s))
        }
        Target::ResourceGroups(s) => {
            only(method, &[Method::GET])?;
            let scope = format!("/subscriptions/{s}");
            authorize(
                req,
                "Microsoft.Resources/subscriptions/resourceGroups/read",
                &scope,
            )?;
            resources::list_groups(req, &s)
        }
        Target::ResourceGroup(s, rg) => {
            let id = ids::resource_group_id(&s, &rg);
            let verb = verb(method)?;
            authorize(
                req,
                &format!("Microsoft.Resources/subscriptions/resourceGroups/{verb}"),
                &id,
            )?;
            match *method {
                Method::PUT => resources::put_group(req, &s, &rg),
                Method::DELETE => resources::delete_group(req, &s, &rg),
                Method::HEAD => resources::head_group(req, &id),
                _ => resources::get_group(req, &id, &rg),
            }
        }
        Target::Providers(s) => {
            only(method, &[Method::GET])?;
            authorize(
                req,
                "Microsoft.Resources/subscriptions/providers/read",
                &format!("/subscriptions/{s}"),
            )?;
            Ok(resources::list_providers(&s))
        }
        Target::Provider(s, ns) => {
            only(method, &[Method::GET])?;
            authorize(
                req,
                "Microsoft.Resources/subscriptions/providers/read",
                &format!("/subscriptions/{s}"),
            )?;
            Ok(Reply::json(StatusCode::OK, resources::provider(&s, &ns)))
        }
        Target::Resource(id) if resources::is_operation(&id) => {
            only(method, &[Method::GET])?;
            resources::poll_operation(req, &id)
        }
        Target::Resource(id) => {
            let verb = verb(method)?;
            authorize(req, &id.action(verb), &id.id())?;
            match *method {
                Method::PUT => resources::put_resource(req, &id),
                Method::DELETE => resources::delete_resource(req, &id),
                Method::GET => resources::get_resource(req, &id),
                _ => Err(not_allowed(method)),
            }
        }
        Target::Collection(c) => match *method {
            Method::GET => {
                authorize(req, &format!("{}/read", c.type_name()), &c.container())?;
                resources::get_collection(req, &c)
            }
            Method::POST if c.owner().is_none() && c.last().eq_ignore_ascii_case("register") => {
                // `POST /subscriptions/{s}/providers/{ns}/register`: every provider is registered.
                authorize(
                    req,
                    &format!("{}/register/action", c.namespace),
                    &c.container(),
                )?;
                Ok(Reply::json(
                    StatusCode::OK,
                    resources::provider(&c.subscription, &c.namespace),
                ))
            }
            Method::POST => {
                authorize(req, &format!("{}/action", c.type_name()), &c.container())?;
                resources::post_action(req, &c)
            }
            _ => Err(not_allowed(method)),
        },
    }
}

fn authorize(req: &Request<'_>, action: &str, scope: &str) -> Result<(), ArmError> {
    req.svc
        .store()
        .read(|d| rbac::require(d, &req.caller, action, scope))
}

fn verb(method: &Method) -> Result<&'static str, ArmError> {
    match *method {
        Method::GET | Method::HEAD => Ok("read"),
        Method::PUT => Ok("write"),
        Method::DELETE => Ok("delete"),
        _ => Err(not_allowed(method)),
    }
}

fn only(method: &Method, allowed: &[Method]) -> Result<(), ArmError> {
    if allowed.contains(method) {
        Ok(())
    } else {
        Err(not_allowed(method))
    }
}

fn not_allowed(method: &Method) -> ArmError {
    ArmError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("The requested resource does not support http method '{method}'."),
    )
}
