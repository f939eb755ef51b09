{{/* The chart's name: nameOverride, else the chart's own. */}}
{{- define "ferrolb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The release-scoped base name of every object: fullnameOverride, else the release name
followed by the chart's name (just the release name when it already contains it).
Truncated to 50 characters so that the longest suffix (-speaker-kube-proxy) still
fits a 63-character name.
*/}}
{{- define "ferrolb.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "ferrolb.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ferrolb.labels" -}}
app.kubernetes.io/name: {{ include "ferrolb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: "controller" or "speaker". */}}
{{- define "ferrolb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferrolb.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Labels of one component's pods: its selector labels, then commonLabels and the
component's podLabels (which cannot replace a selector label).
*/}}
{{- define "ferrolb.podLabels" -}}
{{- $selector := include "ferrolb.selectorLabels" . | fromYaml -}}
{{- $labels := merge (dict) $selector (.values.podLabels | default dict) (.root.Values.commonLabels | default dict) -}}
{{- toYaml $labels -}}
{{- end -}}

{{- define "ferrolb.image" -}}
{{- printf "%s%s:%s" .root.Values.image.registry .image.repository (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{- define "ferrolb.controllerName" -}}{{ include "ferrolb.fullname" . }}-controller{{- end -}}
{{- define "ferrolb.speakerName" -}}{{ include "ferrolb.fullname" . }}-speaker{{- end -}}
{{- define "ferrolb.gossipSecretName" -}}
{{- default (printf "%s-gossip" (include "ferrolb.fullname" .)) .Values.speaker.gossipSecretName -}}
{{- end -}}

{{/*
The ServiceAccount a component runs as: its own (named after the component unless
serviceAccount.name says otherwise) when serviceAccount.create, else the named
existing one, else the namespace's "default".
*/}}
{{- define "ferrolb.serviceAccountName" -}}
{{- $sa := .values.serviceAccount -}}
{{- if $sa.create -}}
{{- default .name $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}
{{- define "ferrolb.controllerServiceAccountName" -}}
{{- include "ferrolb.serviceAccountName" (dict "values" .Values.controller "name" (include "ferrolb.controllerName" .)) -}}
{{- end -}}
{{- define "ferrolb.speakerServiceAccountName" -}}
{{- include "ferrolb.serviceAccountName" (dict "values" .Values.speaker "name" (include "ferrolb.speakerName" .)) -}}
{{- end -}}

{{/*
The controller's leader-election Lease. An installation scoped to a class has its
own Lease, so installations side by side never share one. Without a class the Lease
keeps the controller's default name (ferrolb-controller) whatever the release is
called: an upgrade must never run two leaders under two Lease names.
*/}}
{{- define "ferrolb.leaseName" -}}
{{- if .Values.loadBalancerClass -}}
{{- include "ferrolb.controllerName" . -}}
{{- else -}}
ferrolb-controller
{{- end -}}
{{- end -}}

{{/* A probe's timing, from the component's livenessProbe or readinessProbe value. */}}
{{- define "ferrolb.probeTuning" -}}
periodSeconds: {{ .periodSeconds }}
timeoutSeconds: {{ .timeoutSeconds }}
failureThreshold: {{ .failureThreshold }}
{{- with .initialDelaySeconds }}
initialDelaySeconds: {{ . }}
{{- end }}
{{- end -}}

{{/*
The controller's topologySpreadConstraints: each constraint without a labelSelector
selects the controller's own pods.
*/}}
{{- define "ferrolb.controllerTopologySpread" -}}
{{- $selector := include "ferrolb.selectorLabels" (dict "root" . "component" "controller") | fromYaml -}}
{{- $constraints := list -}}
{{- range .Values.controller.topologySpreadConstraints -}}
{{- $c := deepCopy . -}}
{{- if not (hasKey $c "labelSelector") -}}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) -}}
{{- end -}}
{{- $constraints = append $constraints $c -}}
{{- end -}}
{{- toYaml $constraints -}}
{{- end -}}

{{/* Hardened container security context shared by both components. */}}
{{- define "ferrolb.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* A label selector string ("k=v,k=v", keys sorted) from a dict of labels. */}}
{{- define "ferrolb.selectorString" -}}
{{- $pairs := list -}}
{{- range $k := keys . | sortAlpha -}}
{{- $pairs = append $pairs (printf "%s=%s" $k (index $ $k)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{- /*
The metrics endpoint (values: metrics) of both components. Call with
(dict "root" $ "port" <metricsPort>): the flags; "ferrolb.metricsScheme": the
probes' scheme; "ferrolb.metricsPodIP": the env var of the default bind address;
"ferrolb.metricsTLSMount"/"ferrolb.metricsTLSVolume": a mounted certificate.
*/ -}}
{{- define "ferrolb.metricsArgs" -}}
- --metrics-port={{ .port }}
{{- with .root.Values.metrics.bindAddress }}
- --metrics-bind-address={{ . }}
{{- end }}
- --metrics-auth={{ .root.Values.metrics.auth }}
- --metrics-tls={{ .root.Values.metrics.tls.enabled }}
{{- if and .root.Values.metrics.tls.enabled .root.Values.metrics.tls.secretName }}
- --metrics-cert-file=/etc/ferrolb/metrics-tls/tls.crt
- --metrics-key-file=/etc/ferrolb/metrics-tls/tls.key
{{- end }}
{{- end -}}
{{- define "ferrolb.metricsScheme" -}}
{{ ternary "HTTPS" "HTTP" .Values.metrics.tls.enabled }}
{{- end -}}
{{- define "ferrolb.metricsPodIP" -}}
- name: FERROLB_POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end -}}
{{- define "ferrolb.metricsTLSMount" -}}
{{- if and .Values.metrics.tls.enabled .Values.metrics.tls.secretName }}
volumeMounts:
  - name: metrics-tls
    mountPath: /etc/ferrolb/metrics-tls
    readOnly: true
{{- end }}
{{- end -}}
{{- define "ferrolb.metricsTLSVolume" -}}
{{- if and .Values.metrics.tls.enabled .Values.metrics.tls.secretName }}
volumes:
  - name: metrics-tls
    secret:
      secretName: {{ .Values.metrics.tls.secretName }}
{{- end }}
{{- end -}}
