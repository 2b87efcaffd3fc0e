# Ferry: a worker (follows node-prepare.sh). The CA is not pinned: the workers reach the
# control plane on the cluster's private network only, inside its security group, and
# the bootstrap token is the shared secret (kubeadm's documented
# --discovery-token-unsafe-skip-ca-verification mode). Pinning needs the CA's hash before
# the workers boot, which would mean Ferry generating the CA; see docs/openstack.md.
for attempt in $(seq 1 90); do
  if kubeadm join "__MASTER_ADDRESS__:6443" \
      --token "__JOIN_TOKEN__" \
      --discovery-token-unsafe-skip-ca-verification; then
    echo "ferry: joined on attempt $attempt"
    exit 0
  fi
  # The control plane may still be coming up: workers boot in parallel with it.
  kubeadm reset --force >/dev/null 2>&1 || true
  sleep 10
done
echo "ferry: could not join the control plane at __MASTER_ADDRESS__" >&2
exit 1
