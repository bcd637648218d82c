package api

import "net/http"

// answer is a net/http ResponseWriter (an httptest.ResponseRecorder, a test server's) as an
// AnswerWriter, as package httpapi adapts it.
type answer struct{ http.ResponseWriter }

func (a answer) SetHeader(key, value string) { a.Header().Set(key, value) }
func (a answer) Flush() error                { return http.NewResponseController(a.ResponseWriter).Flush() }

// readError is ReadError of a net/http response.
func readError(resp *http.Response) *Error { return ReadError(resp.Body, resp.StatusCode, resp.Status) }
