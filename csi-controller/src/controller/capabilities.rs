//! Which volume capabilities a Fluid volume offers (mounts, any access mode) and which
//! Controller RPCs the service announces.

use super::*;

/// Every capability must be a mount with a known access mode.
pub(super) fn check_capabilities(caps: &[VolumeCapability]) -> Result<()> {
    if caps.is_empty() {
        return Err(Error::invalid(
            "volume_capabilities",
            "at least one capability is required",
        ));
    }
    for (i, cap) in caps.iter().enumerate() {
        if let Err(message) = capability_problem(cap) {
            return Err(Error::invalid(format!("volume_capabilities[{i}]"), message));
        }
    }
    Ok(())
}

/// Why a capability cannot be offered, if it cannot.
pub(super) fn capability_problem(cap: &VolumeCapability) -> std::result::Result<(), String> {
    match &cap.access_type {
        Some(AccessType::Mount(_)) => {}
        Some(AccessType::Block(_)) => {
            return Err(
                "access_type block is not supported: Fluid volumes are file systems (use volumeMode: Filesystem)".into(),
            );
        }
        None => return Err("access_type is required (mount)".into()),
    }
    match cap
        .access_mode
        .as_ref()
        .map(|m| access_mode::Mode::try_from(m.mode))
    {
        Some(Ok(mode)) if mode != access_mode::Mode::Unknown => Ok(()),
        _ => Err("access_mode is required (e.g. MULTI_NODE_READER_ONLY)".into()),
    }
}

pub(super) fn rpc_capability(t: rpc::Type) -> ControllerServiceCapability {
    ControllerServiceCapability {
        r#type: Some(controller_service_capability::Type::Rpc(
            controller_service_capability::Rpc { r#type: t as i32 },
        )),
    }
}
