package api

import (
	"encoding/json"
	"errors"
	"net/http"
)

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes err as an error envelope; errors that are not *Error become "internal".
func WriteError(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: CodeInternal, Message: err.Error()}
	}
	WriteJSON(w, e.HTTPStatus(), ErrorBody{Error: e})
}

// ReadError turns a non-2xx response into an *Error, keeping the server's code and message.
func ReadError(resp *http.Response) *Error {
	var body ErrorBody
	if err := json.NewDecoder(resp.Body).Decode(&body); err == nil && body.Error != nil {
		return body.Error
	}
	code := CodeInternal
	for c, s := range codeStatus {
		if s == resp.StatusCode {
			code = c
		}
	}
	return Errorf(code, "%s", resp.Status)
}
