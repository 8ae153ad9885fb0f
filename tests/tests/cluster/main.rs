//! Tests of what is deployed: the chart, the image, and the end-to-end tests on the real
//! single-node cluster. Their own binary: the cluster tests count every fluid-fuse process and
//! mount of the machine, so no other test may mount beside them.

mod chart;
mod cluster;
mod image;
