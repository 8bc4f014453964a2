{{/* The prefix of every object name, as config/default's namePrefix. */}}
{{- define "diskcache-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object (config/ says managed-by: kustomize). */}}
{{- define "diskcache-operator.labels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/name: diskcache-operator
{{- end -}}

{{/* Selector of the operator's pods (the same as config/manager). */}}
{{- define "diskcache-operator.selectorLabels" -}}
app.kubernetes.io/name: diskcache-operator
control-plane: controller-manager
{{- end -}}

{{/*
The name of the leader election Lease (--leader-election-id): one per
release, so two releases never share a leader. For the release name
diskcache-operator it is the operator's default, the Lease of earlier installs.
*/}}
{{- define "diskcache-operator.leaderElectionID" -}}
{{- .Values.leaderElection.id | default (printf "%s.cache.diskcache.dev" (include "diskcache-operator.fullname" .)) -}}
{{- end -}}

{{- define "diskcache-operator.serviceAccountName" -}}
{{ include "diskcache-operator.fullname" . }}-controller-manager
{{- end -}}

{{- define "diskcache-operator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/*
A Role or ClusterRole from one of the files/ copies of config/rbac: its rules
and labels, the name prefixed and placed in the given namespace (none for a
ClusterRole). Arguments: list of the root context, file, kind, namespace.
*/}}
{{- define "diskcache-operator.roleFromFile" -}}
{{- $root := index . 0 -}}
{{- $role := $root.Files.Get (index . 1) | fromYaml -}}
{{- $kind := index . 2 -}}
{{- $namespace := index . 3 -}}
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ $kind }}
metadata:
  name: {{ include "diskcache-operator.fullname" $root }}-{{ $role.metadata.name }}
  {{- with $namespace }}
  namespace: {{ . }}
  {{- end }}
  labels:
    {{- $labels := merge (dict "app.kubernetes.io/managed-by" $root.Release.Service) ($role.metadata.labels | default dict) }}
    {{- $_ := set $labels "app.kubernetes.io/managed-by" $root.Release.Service }}
    {{- toYaml $labels | nindent 4 }}
rules:
{{- toYaml $role.rules | nindent 0 }}
{{- end -}}

{{/*
"true" when the operator serves /metrics securely (values metrics.secure;
default: unless the install is namespaced), else "".
*/}}
{{- define "diskcache-operator.metricsSecure" -}}
{{- $secure := .Values.metrics.secure -}}
{{- if kindIs "invalid" $secure -}}{{- $secure = not .Values.watchNamespaces -}}{{- end -}}
{{- if $secure -}}true{{- end -}}
{{- end -}}
