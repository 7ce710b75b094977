{{/*
Names. Every object is "<fullname>-<component>" so two releases in one cluster never collide on
cluster-scoped objects (ClusterRoles, StorageClasses).
*/}}
{{- define "space.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "space.fullname" -}}
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

{{/* "<fullname>-<component>", kept within the 63 characters a Service name allows. */}}
{{- define "space.componentName" -}}
{{- $ctx := index . 0 }}{{- $component := index . 1 -}}
{{- printf "%s-%s" (include "space.fullname" $ctx | trunc (int (sub 62 (len $component))) | trimSuffix "-") $component }}
{{- end }}

{{- define "space.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object; call with (list $ "component"). */}}
{{- define "space.labels" -}}
{{- $ctx := index . 0 }}{{- $component := index . 1 -}}
helm.sh/chart: {{ include "space.chart" $ctx }}
{{ include "space.selectorLabels" . }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
app.kubernetes.io/part-of: space
{{- end }}

{{/* Selector labels must never change after install (selectors are immutable). */}}
{{- define "space.selectorLabels" -}}
{{- $ctx := index . 0 }}{{- $component := index . 1 -}}
app.kubernetes.io/name: {{ include "space.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ $component }}
{{- end }}

{{/* Pod template labels: selector labels, version, and the user's extra pod labels. */}}
{{- define "space.podLabels" -}}
{{- $ctx := index . 0 -}}
{{ include "space.labels" . }}
{{- with $ctx.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The Space image; an empty tag means the chart's appVersion. */}}
{{- define "space.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "space.operator.serviceAccountName" -}}
{{- include "space.componentName" (list . "operator") }}
{{- end }}
{{- define "space.gateway.serviceAccountName" -}}
{{- include "space.componentName" (list . "gateway") }}
{{- end }}
{{- define "space.csiController.serviceAccountName" -}}
{{- include "space.componentName" (list . "csi-controller") }}
{{- end }}
{{- define "space.csiNode.serviceAccountName" -}}
{{- include "space.componentName" (list . "csi-node") }}
{{- end }}

{{/* The gateway's client Service as host:port, which the operator dials. */}}
{{- define "space.gateway.address" -}}
{{- printf "%s.%s.svc:%d" (include "space.componentName" (list . "gateway")) .Release.Namespace (int .Values.gateway.ports.grpc) }}
{{- end }}

{{/* The CSI socket path inside the node plugin's host directory. */}}
{{- define "space.csi.pluginDir" -}}
{{- printf "%s/plugins/%s" .Values.csi.node.kubeletDir .Values.csi.driverName }}
{{- end }}
