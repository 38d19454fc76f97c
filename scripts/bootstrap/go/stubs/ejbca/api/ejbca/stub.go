// Package ejbca is agent-passport's stand-in for the EJBCA REST client, which
// this machine's module proxy does not serve. It has only what SPIRE's EJBCA
// UpstreamAuthority plugin compiles against; every call fails, so that plugin
// cannot be configured in this build. No other SPIRE plugin uses it.
package ejbca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
)

var errUnavailable = errors.New("EJBCA client not included in this build (agent-passport bootstrap stand-in)")

type Authenticator interface{ unavailable() }

type MTLSAuthenticatorBuilder struct{}

func NewMTLSAuthenticatorBuilder() *MTLSAuthenticatorBuilder { return &MTLSAuthenticatorBuilder{} }

func (b *MTLSAuthenticatorBuilder) WithClientCertificate(*tls.Certificate) *MTLSAuthenticatorBuilder {
	return b
}

func (b *MTLSAuthenticatorBuilder) WithCaCertificates([]*x509.Certificate) *MTLSAuthenticatorBuilder {
	return b
}

func (b *MTLSAuthenticatorBuilder) Build() (Authenticator, error) { return nil, errUnavailable }

type Configuration struct{ Host string }

func NewConfiguration() *Configuration { return &Configuration{} }

func (c *Configuration) SetAuthenticator(Authenticator) {}

type APIClient struct{ V1CertificateApi *V1CertificateApiService }

func NewAPIClient(*Configuration) (*APIClient, error) { return nil, errUnavailable }

type V1CertificateApiService struct{}

func (*V1CertificateApiService) EnrollPkcs10Certificate(context.Context) ApiEnrollPkcs10CertificateRequest {
	return ApiEnrollPkcs10CertificateRequest{}
}

type ApiEnrollPkcs10CertificateRequest struct{}

func (r ApiEnrollPkcs10CertificateRequest) EnrollCertificateRestRequest(EnrollCertificateRestRequest) ApiEnrollPkcs10CertificateRequest {
	return r
}

func (ApiEnrollPkcs10CertificateRequest) Execute() (*CertificateRestResponse, *http.Response, error) {
	return nil, nil, errUnavailable
}

type EnrollCertificateRestRequest struct{}

func NewEnrollCertificateRestRequest() *EnrollCertificateRestRequest {
	return &EnrollCertificateRestRequest{}
}

func (*EnrollCertificateRestRequest) SetUsername(string)                 {}
func (*EnrollCertificateRestRequest) SetPassword(string)                 {}
func (*EnrollCertificateRestRequest) SetCertificateRequest(string)       {}
func (*EnrollCertificateRestRequest) SetCertificateAuthorityName(string) {}
func (*EnrollCertificateRestRequest) SetCertificateProfileName(string)   {}
func (*EnrollCertificateRestRequest) SetEndEntityProfileName(string)     {}
func (*EnrollCertificateRestRequest) SetIncludeChain(bool)               {}
func (*EnrollCertificateRestRequest) SetAccountBindingId(string)         {}

type CertificateRestResponse struct{ CertificateChain []string }

func (*CertificateRestResponse) GetResponseFormat() string { return "" }
func (*CertificateRestResponse) GetCertificate() string    { return "" }

type GenericOpenAPIError struct{}

func (*GenericOpenAPIError) Error() string { return errUnavailable.Error() }
func (*GenericOpenAPIError) Body() []byte  { return nil }
