// The sandbox ("pause") container of the test cluster's pods, built here instead of pulled
// (the test machines reach no image registry): scripts/services/cluster.sh builds it and
// imports it as the containerd CRI sandbox image.
module fluid-tests/pause

go 1.26.0
