//! The FerroLB lab: a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler built from source) and a LAN of
//! network namespaces standing in for nodes, on one Linux machine.
//!
//! The `lab` binary drives it (`cargo lab up | down | status | …`); the
//! [`harness`] module is what end-to-end tests use, [`speakers`] the speaker
//! tests' fixture, [`faults`] the faults they inject and [`checker`] what the
//! client sees meanwhile.

pub mod agent;
pub mod chart;
pub mod checker;
pub mod command;
pub mod control_plane;
pub mod demo;
pub mod faults;
pub mod harness;
pub mod history;
pub mod ipvs;
pub mod kube_proxy;
pub mod kubeconfig;
pub mod lab;
pub mod lan;
pub mod nodes;
pub mod objects;
pub mod pki;
pub mod podnet;
pub mod process;
pub mod speakers;
pub mod tools;
pub mod topology;
