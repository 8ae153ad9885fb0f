//! The CSI Identity service, shared by the controller and node plugins: they differ only in
//! whether they advertise the controller service.

use tonic::{Request, Response, Status};

use crate::csi::identity_server::Identity;
use crate::csi::plugin_capability::{self, service};
use crate::csi::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, PluginCapability, ProbeRequest, ProbeResponse,
};

#[derive(Clone, Debug)]
pub struct IdentityService {
    pub driver_name: String,
    pub version: String,
    /// Advertise CONTROLLER_SERVICE (the controller plugin does, the node plugin does not).
    pub controller: bool,
}

impl IdentityService {
    pub fn new(driver_name: impl Into<String>, controller: bool) -> Self {
        IdentityService {
            driver_name: driver_name.into(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            controller,
        }
    }
}

/// A CSI driver name: at most 63 characters, alphanumerics, '-', '_' and '.', starting and
/// ending with an alphanumeric (the spec's rule, so kubelet accepts it).
pub fn check_driver_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ends_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 63 || !ok_chars || !ends_ok {
        return Err(format!(
            "driver name {name:?}: 1-63 characters of [a-zA-Z0-9-_.], starting and ending alphanumeric"
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: self.driver_name.clone(),
            vendor_version: self.version.clone(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let capabilities = if self.controller {
            vec![PluginCapability {
                r#type: Some(plugin_capability::Type::Service(
                    plugin_capability::Service {
                        r#type: service::Type::ControllerService as i32,
                    },
                )),
            }]
        } else {
            vec![]
        };
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse { ready: Some(true) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_names() {
        assert!(check_driver_name("fuse.csi.fluid.io").is_ok());
        for bad in ["", "-x", "x-", "a b", &"x".repeat(64)] {
            assert!(check_driver_name(bad).is_err(), "{bad:?}");
        }
    }
}
