{{/* The CSI driver name: the CSIDriver object, the StorageClass provisioner, the plugin dir. */}}
{{- define "fluid.driverName" -}}
fuse.csi.fluid.io
{{- end }}

{{/* The chart name, or nameOverride. */}}
{{- define "fluid.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of object names: fullnameOverride, else "<release>-<name>" (just the release name
when it already contains the chart name). Short enough for "-controller" to fit 63 characters.
*/}}
{{- define "fluid.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "fluid.controllerName" -}}
{{ include "fluid.fullname" . }}-controller
{{- end }}

{{/* The Secret with the shared token of the node plugins' cache endpoints (cache-token.yaml). */}}
{{- define "fluid.cacheTokenSecret" -}}
{{ include "fluid.fullname" . }}-cache-token
{{- end }}

{{/* The env entry that gives a container that token. */}}
{{- define "fluid.cacheTokenEnv" -}}
- name: FLUID_CACHE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "fluid.cacheTokenSecret" . }}
      key: token
{{- end }}

{{- define "fluid.nodeName" -}}
{{ include "fluid.fullname" . }}-node
{{- end }}

{{- define "fluid.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "fluid.labels" -}}
helm.sh/chart: {{ include "fluid.chart" . }}
{{ include "fluid.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "fluid.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fluid.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The Fluid image (all binaries). */}}
{{- define "fluid.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* kubelet's root dir without a trailing slash. */}}
{{- define "fluid.kubeletDir" -}}
{{- $d := .Values.node.kubeletDir | trimSuffix "/" }}
{{- if not (hasPrefix "/" $d) }}
{{- fail (printf "node.kubeletDir %q must be an absolute path" .Values.node.kubeletDir) }}
{{- end }}
{{- $d }}
{{- end }}

{{/* The node plugin's socket directory on the host. */}}
{{- define "fluid.pluginDir" -}}
{{ include "fluid.kubeletDir" . }}/plugins/{{ include "fluid.driverName" . }}
{{- end }}

{{/*
The host directories of the node's disk cache tiers, as a YAML list: the DIR of every ssd/hdd
entry of node.tiers (`MEDIUM:DIR:SIZE[,high=H,low=L]`; DIR is what lies between the first and
the last `:`, as fluid-fuse parses it), then node.extraCacheDirs, without duplicates. Fails on
a tier the binaries would refuse to start with, so a bad value stops the install, not the pods.
*/}}
{{- define "fluid.cacheDirs" -}}
{{- $dirs := list }}
{{- range $i, $t := .Values.node.tiers }}
{{- $spec := toString $t | trim }}
{{- if not (contains ":" $spec) }}
{{- fail (printf "node.tiers[%d] %q: expected mem:SIZE or ssd|hdd:DIR:SIZE[,high=H,low=L]" $i $spec) }}
{{- end }}
{{- $medium := regexReplaceAll ":.*$" $spec "" | lower }}
{{- if eq $medium "mem" }}
{{- if regexMatch "^[^:]*:.*[:,]" $spec }}
{{- fail (printf "node.tiers[%d] %q: a mem tier takes only a size, as in mem:2GiB" $i $spec) }}
{{- end }}
{{- else if or (eq $medium "ssd") (eq $medium "hdd") }}
{{- if not (regexMatch "^[^:]*:.+:[^:]+$" $spec) }}
{{- fail (printf "node.tiers[%d] %q: expected %s:DIR:SIZE[,high=H,low=L]" $i $spec $medium) }}
{{- end }}
{{- $dir := regexReplaceAll "^[^:]*:(.*):[^:]*$" $spec "${1}" }}
{{- if not (hasPrefix "/" $dir) }}
{{- fail (printf "node.tiers[%d] %q: the directory %q must be an absolute path" $i $spec $dir) }}
{{- end }}
{{- $dirs = append $dirs (clean $dir) }}
{{- else }}
{{- fail (printf "node.tiers[%d] %q: unknown medium %q (known: mem, ssd, hdd)" $i $spec $medium) }}
{{- end }}
{{- end }}
{{- range $i, $d := .Values.node.extraCacheDirs }}
{{- if not (hasPrefix "/" (toString $d)) }}
{{- fail (printf "node.extraCacheDirs[%d] %q must be an absolute path" $i $d) }}
{{- end }}
{{- $dirs = append $dirs (clean (toString $d)) }}
{{- end }}
{{- toYaml (uniq $dirs) }}
{{- end }}
