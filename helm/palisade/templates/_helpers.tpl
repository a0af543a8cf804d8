{{- define "palisade.name" -}}palisade{{- end -}}

{{- define "palisade.fullname" -}}
{{- if eq .Release.Name "palisade" -}}palisade{{- else -}}{{ printf "%s-palisade" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "palisade.labels" -}}
app.kubernetes.io/name: palisade
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "palisade.selectorLabels" -}}
app.kubernetes.io/name: palisade
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "palisade.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "palisade.enforcerImage" -}}
{{ .Values.injection.enforcerImage.repository }}:{{ .Values.injection.enforcerImage.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "palisade.serviceName" -}}{{ include "palisade.fullname" . }}{{- end -}}
{{- define "palisade.policyServiceName" -}}{{ include "palisade.fullname" . }}-policy{{- end -}}
{{- define "palisade.policyServiceURL" -}}https://{{ include "palisade.policyServiceName" . }}.{{ .Release.Namespace }}.svc:443{{- end -}}

{{/* Names the serving certificate covers: the admission and policy services. */}}
{{- define "palisade.certNames" -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list -}}
{{- range $svc := list (include "palisade.serviceName" .) (include "palisade.policyServiceName" .) -}}
{{- $names = concat $names (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns)) -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{/* A random token kept across upgrades in Secret $name, key "token". */}}
{{- define "palisade.token" -}}
{{- $secret := lookup "v1" "Secret" .ctx.Release.Namespace .name -}}
{{- if and $secret $secret.data (index $secret.data "token") -}}
{{- index $secret.data "token" -}}
{{- else -}}
{{- randAlphaNum 40 | b64enc -}}
{{- end -}}
{{- end -}}
{{- define "palisade.tlsSecret" -}}{{ include "palisade.fullname" . }}-tls{{- end -}}

{{- define "palisade.excludedNamespaces" -}}
{{- $list := concat (list .Release.Namespace) .Values.webhook.excludeNamespaces | uniq -}}
{{- toJson $list -}}
{{- end -}}

{{/* Namespace selector shared by both webhooks. */}}
{{- define "palisade.namespaceSelector" -}}
namespaceSelector:
  matchExpressions:
    - key: {{ .Values.webhook.namespaceLabel }}
      operator: In
      values: [{{ .Values.webhook.namespaceLabelValue | quote }}]
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values: {{ include "palisade.excludedNamespaces" . }}
{{- end -}}

{{/* Self-signed CA + serving certificate, generated once and then reused
     from the existing Secret so upgrades do not rotate it unasked. */}}
{{- define "palisade.selfSignedCerts" -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "palisade.tlsSecret" .) -}}
{{- if and $secret $secret.data (index $secret.data "ca.crt") -}}
ca.crt: {{ index $secret.data "ca.crt" }}
tls.crt: {{ index $secret.data "tls.crt" }}
tls.key: {{ index $secret.data "tls.key" }}
{{- else -}}
{{- $svc := include "palisade.serviceName" . -}}
{{- $ns := .Release.Namespace -}}
{{- $ca := genCA "palisade-ca" (int .Values.certificates.validityDays) -}}
{{- $names := include "palisade.certNames" . | fromJsonArray -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc $ns) nil $names (int .Values.certificates.validityDays) $ca -}}
ca.crt: {{ $ca.Cert | b64enc }}
tls.crt: {{ $cert.Cert | b64enc }}
tls.key: {{ $cert.Key | b64enc }}
{{- end -}}
{{- end -}}
