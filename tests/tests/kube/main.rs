//! Integration tests against a real kube-apiserver (the `kube` service): the node plugin, the
//! controller and its webhook with Kubernetes.

mod kube_controller;
mod kube_node;
mod webhook;
