// Package e2e tests hostd as operators run it: the real binary, killed with SIGKILL at the
// worst moments and restarted, driven by AWS's own CLI, on a real libvirtd with real guests.
package e2e
