//! Integration tests that need real FUSE mounts and the S3, Ceph RGW and HDFS servers (and
//! csi-sanity), but no Kubernetes: one test binary, so a change in the data path links once.

mod csi_controller;
mod csi_node;
mod csi_sanity;
mod handover;
mod mount;
mod peers;
mod smoke;
mod sources;
