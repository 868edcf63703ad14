{{/*
Names and labels shared by every template. Names are cut at 63 characters because Kubernetes
object names (and label values) allow no more.
*/}}
{{- define "pop3bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pop3bridge.fullname" -}}
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

{{- define "pop3bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pop3bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pop3bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pop3bridge.labels" -}}
helm.sh/chart: {{ include "pop3bridge.chart" . }}
{{ include "pop3bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pop3bridge.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "pop3bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pop3bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" when the state lives in a SQLite file (one writer, needs a volume). */}}
{{- define "pop3bridge.usesSqlite" -}}
{{- if hasPrefix "sqlite:" .Values.config.state.url }}true{{ end }}
{{- end }}

{{/* "true" when pods mount a secret at /run/secrets/pop3bridge. */}}
{{- define "pop3bridge.hasSecret" -}}
{{- if or .Values.secrets.existingSecret .Values.secrets.values }}true{{ end }}
{{- end }}

{{- define "pop3bridge.secretName" -}}
{{- default (include "pop3bridge.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/*
Pod-level pieces both Deployments share. Called with (dict "root" $ "component" "poller").
*/}}
{{- define "pop3bridge.podAnnotations" -}}
checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
{{- if .root.Values.secrets.values }}
checksum/secret: {{ include (print .root.Template.BasePath "/secret.yaml") .root | sha256sum }}
{{- end }}
{{- end }}

{{- define "pop3bridge.env" -}}
- name: POP3BRIDGE_CONFIG
  value: /etc/pop3bridge/config.yaml
# The image sets these too, and the environment wins over the file: without them a non-default
# ops.port would reach the ConfigMap and the probes but not the process.
- name: POP3BRIDGE_OPS__HOST
  value: "0.0.0.0"
- name: POP3BRIDGE_OPS__PORT
  value: {{ .Values.ops.port | quote }}
{{- if .Values.state.passwordSecretKey }}
# The driver reads PGPASSWORD, which keeps the password out of the ConfigMap.
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "pop3bridge.secretName" . }}
      key: {{ .Values.state.passwordSecretKey }}
{{- end }}
{{- end }}

{{- define "pop3bridge.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: ops
  periodSeconds: {{ .Values.probes.startup.periodSeconds }}
  failureThreshold: {{ .Values.probes.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: ops
  periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: ops
  periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
{{- end }}

{{- define "pop3bridge.commonMounts" -}}
- name: config
  mountPath: /etc/pop3bridge
  readOnly: true
- name: tmp
  mountPath: /tmp
- name: state
  mountPath: /var/lib/pop3bridge
{{- if eq (include "pop3bridge.hasSecret" .) "true" }}
- name: secrets
  mountPath: /run/secrets/pop3bridge
  readOnly: true
{{- end }}
{{- end }}

{{- define "pop3bridge.commonVolumes" -}}
- name: config
  configMap:
    name: {{ include "pop3bridge.fullname" . }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if eq (include "pop3bridge.hasSecret" .) "true" }}
- name: secrets
  secret:
    secretName: {{ include "pop3bridge.secretName" . }}
    defaultMode: 0440
{{- end }}
{{- end }}
