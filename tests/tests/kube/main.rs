//! Integration tests against a real kube-apiserver (the `kube` service): the node plugin, the
//! controller and its webhook with Kubernetes, and the CRDs they share.

mod crds;
mod kube_controller;
mod kube_node;
mod webhook;
