# Ferry: the control plane (follows node-prepare.sh, whose `report` signals Heat). On
# success it signals twice: the cluster CA (id "ca"), then Ferry's token (id "token").

# The token lives as long as the cluster (--token-ttl 0): workers added by a resize
# months later join with it. It never leaves the cloud: Heat made it and only the
# servers' user data carry it.
kubeadm init \
  --token "__JOIN_TOKEN__" \
  --token-ttl 0 \
  --control-plane-endpoint "__API_HOST__:__API_PORT__" \
  --apiserver-cert-extra-sans "__API_HOST__" \
  --pod-network-cidr "__POD_CIDR__"
export KUBECONFIG=/etc/kubernetes/admin.conf
kubectl apply -f "__CNI_MANIFEST_URL__"

# Ferry's access: a ServiceAccount bound to exactly the verbs its adapter uses, with a
# token Secret (Ferry keeps no copy; it reads the token from the stack's outputs).
kubectl apply -f - <<'ROLE'
__FERRY_CLUSTER_ROLE__
ROLE
kubectl apply -f - <<'ACCESS'
apiVersion: v1
kind: ServiceAccount
metadata:
  name: ferry
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: ferry-adapter
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: ferry-adapter
subjects:
  - kind: ServiceAccount
    name: ferry
    namespace: kube-system
---
apiVersion: v1
kind: Secret
metadata:
  name: ferry-token
  namespace: kube-system
  annotations:
    kubernetes.io/service-account.name: ferry
type: kubernetes.io/service-account-token
ACCESS
# The token controller fills the Secret in shortly after it exists.
token=""
for _ in $(seq 1 60); do
  token=$(kubectl -n kube-system get secret ferry-token -o jsonpath='{.data.token}')
  [ -n "$token" ] && break
  sleep 2
done
[ -n "$token" ]
report "{\"status\": \"SUCCESS\", \"id\": \"ca\", \"data\": \"$(base64 -w0 /etc/kubernetes/pki/ca.crt)\"}"
report "{\"status\": \"SUCCESS\", \"id\": \"token\", \"data\": \"$(echo "$token" | base64 -d)\"}"
echo "ferry: control plane ready"
