//! The kubelet's plugin registration (`pluginregistration/v1`): the kubelet finds our socket in
//! its plugins_registry folder, asks who we are, and says whether it registered the driver.
//! Serving it ourselves replaces the node-driver-registrar sidecar: one container and one
//! image less on every node.

use std::path::PathBuf;

use fluid_proto::registration::registration_server::Registration;
use fluid_proto::registration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use tonic::{Request, Response, Status};

/// The plugin type of a CSI driver in the kubelet's registration API.
pub const CSI_PLUGIN: &str = "CSIPlugin";
/// The CSI versions the kubelet may speak to us (the kubelet accepts 1.x).
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0"];

pub struct RegistrationService {
    driver: String,
    /// The CSI socket as a host path.
    csi_socket: PathBuf,
}

impl RegistrationService {
    pub fn new(driver: String, csi_socket: PathBuf) -> Self {
        RegistrationService { driver, csi_socket }
    }
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        Ok(Response::new(PluginInfo {
            r#type: CSI_PLUGIN.to_string(),
            name: self.driver.clone(),
            endpoint: self.csi_socket.display().to_string(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        if status.plugin_registered {
            tracing::info!(
                driver = %self.driver,
                "registered with the kubelet (CSI on {})",
                self.csi_socket.display()
            );
        } else {
            // The kubelet tries again when the socket is made anew: a restart of the plugin.
            tracing::error!(
                driver = %self.driver,
                "the kubelet refused the registration: {}; restart the plugin once that is fixed",
                status.error
            );
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}
