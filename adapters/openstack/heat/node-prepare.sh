#!/bin/bash
# Ferry: what every server of the cluster needs before kubeadm (cloud-init user data, run
# once as root on Ubuntu 24.04). Heat joins this file with master-bootstrap.sh or
# worker-bootstrap.sh and replaces the __UPPER_CASE__ placeholders.
set -Eeuo pipefail
exec > >(tee -a /var/log/ferry-bootstrap.log) 2>&1

# Tells Heat how the bootstrap went: the control plane's wait condition handle (its
# curl command), or nothing on a worker (`true`), whose join the cluster itself shows.
report() {
  __SIGNAL__ --data-binary "$1"
}
# A failure ends the stack's wait at once with the line, instead of at its timeout. The
# reason must stay valid JSON: no quotes or backslashes in it.
trap 'report "{\"status\": \"FAILURE\", \"id\": \"ca\", \"reason\": \"bootstrap of $(hostname) failed at line $LINENO; see /var/log/ferry-bootstrap.log\"}"' ERR
echo "ferry: preparing $(hostname) for Kubernetes __KUBERNETES_VERSION__"

# kubelet refuses to run with swap on; the pod network needs bridged traffic to go
# through iptables and IP forwarding.
swapoff -a
sed -i '/\sswap\s/ s/^/#/' /etc/fstab
cat > /etc/modules-load.d/kubernetes.conf <<'MODULES'
overlay
br_netfilter
MODULES
modprobe overlay
modprobe br_netfilter
cat > /etc/sysctl.d/90-kubernetes.conf <<'SYSCTL'
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
net.ipv4.ip_forward = 1
SYSCTL
sysctl --system >/dev/null

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q containerd apt-transport-https ca-certificates curl gpg
# kubeadm configures the kubelet for the systemd cgroup driver; containerd must agree.
mkdir -p /etc/containerd
containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' > /etc/containerd/config.toml
systemctl restart containerd

install -d -m 0755 /etc/apt/keyrings
curl -fsSL "https://pkgs.k8s.io/core:/stable:/v__KUBERNETES_VERSION__/deb/Release.key" \
  | gpg --dearmor --yes -o /etc/apt/keyrings/kubernetes.gpg
echo "deb [signed-by=/etc/apt/keyrings/kubernetes.gpg] https://pkgs.k8s.io/core:/stable:/v__KUBERNETES_VERSION__/deb/ /" \
  > /etc/apt/sources.list.d/kubernetes.list
apt-get update -q
apt-get install -y -q kubelet kubeadm kubectl
# Upgrades are kubeadm's job, never unattended-upgrades'.
apt-mark hold kubelet kubeadm kubectl
systemctl enable --now kubelet
