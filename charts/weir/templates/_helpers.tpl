{{/* Name of the chart (or its override), at most 63 characters. */}}
{{- define "weir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: the release name, unless it already contains the chart name. */}}
{{- define "weir.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "weir.operatorName" -}}
{{- printf "%s-operator" (include "weir.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The ClusterRole the operator binds to each Topic's broker ServiceAccount. */}}
{{- define "weir.brokerClusterRole" -}}
{{- printf "%s-broker" (include "weir.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "weir.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "weir.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels of every object of the chart. */}}
{{- define "weir.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "weir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector of the operator pods. */}}
{{- define "weir.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "weir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Selector of every broker pod the operator creates (see operator/src/build/labels.rs). */}}
{{- define "weir.brokerSelectorLabels" -}}
app.kubernetes.io/name: weir
app.kubernetes.io/component: broker
{{- end }}

{{/* Namespaces that get per-namespace objects for brokers: the given list, else watchNamespaces,
     else the release namespace. Call with (list $root $list). */}}
{{- define "weir.brokerNamespaces" -}}
{{- $root := index . 0 }}
{{- $given := index . 1 }}
{{- $namespaces := $given | default $root.Values.watchNamespaces | default (list $root.Release.Namespace) }}
{{- toJson $namespaces }}
{{- end }}

{{/* The Pod Security "restricted" container context shared by every container. */}}
{{- define "weir.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The operator's rules on namespaced objects (operator/src/rbac.rs OPERATOR_RULES, minus namespaces). */}}
{{- define "weir.operatorRules" -}}
- apiGroups: [weir.dev]
  resources: [topics]
  verbs: [get, list, watch, patch]
- apiGroups: [weir.dev]
  resources: [consumergroups]
  verbs: [list, watch, patch]
- apiGroups: [weir.dev]
  resources: [topics/status, consumergroups/status]
  verbs: [patch]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [list, patch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, create, patch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [rolebindings]
  verbs: [get, create, patch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterroles]
  verbs: [bind]
  resourceNames: [{{ include "weir.brokerClusterRole" . }}]
{{- end }}

{{/* Egress every Weir pod needs: DNS and the Kubernetes API server. */}}
{{- define "weir.egressBase" -}}
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
- to:
    {{- range .Values.networkPolicy.apiServer.cidrs }}
    - ipBlock: {cidr: {{ . }}}
    {{- end }}
  ports:
    {{- range .Values.networkPolicy.apiServer.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
{{- end }}
