{{/* The release-scoped base name of every object. */}}
{{- define "ferrolb.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ferrolb.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: "controller" or "speaker". */}}
{{- define "ferrolb.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ferrolb.image" -}}
{{- printf "%s%s:%s" .root.Values.image.registry .image.repository (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{- define "ferrolb.controllerName" -}}{{ include "ferrolb.fullname" . }}-controller{{- end -}}
{{- define "ferrolb.speakerName" -}}{{ include "ferrolb.fullname" . }}-speaker{{- end -}}
{{- define "ferrolb.gossipSecretName" -}}
{{- default (printf "%s-gossip" (include "ferrolb.fullname" .)) .Values.speaker.gossipSecretName -}}
{{- end -}}

{{/* Hardened container security context shared by both components. */}}
{{- define "ferrolb.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
seccompProfile:
  type: RuntimeDefault
{{- end -}}
