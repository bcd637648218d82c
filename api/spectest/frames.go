package spectest

import (
	"encoding/binary"
	"fmt"
)

// frames is the media type of an answer as frames (api.EventFrames): each frame is the event
// name's length (1 byte), the name, the payload's length (4 bytes, big-endian), the payload.
const frames = "application/x-nsbox-frames"

// ValidateFrames checks a whole answer as frames, read to its end, against the frames
// documented for the operation and status (x-frames, shaped as x-sse): every event must be
// documented, a JSON payload must match its event's schema (a payload documented as a binary
// string is raw bytes and is not checked), and the answer must end right after one of its
// final events. path is as for ValidateResponse.
func (s *Spec) ValidateFrames(method, path string, status int, body []byte) error {
	key, resp, err := s.response(method, path, status)
	if err != nil {
		return err
	}
	media := resp.Content[frames]
	if media == nil || media.Frames == nil {
		return fmt.Errorf("%s: status %d is not documented as frames (%s)", key, status, frames)
	}
	prefix := fmt.Sprintf("%s: status %d", key, status)
	last := ""
	for n := 1; len(body) > 0; n++ {
		size := 1 + int(body[0]) + 4
		if len(body) < size {
			return fmt.Errorf("%s: frame %d: the answer ends inside its header", prefix, n)
		}
		name := string(body[1 : 1+body[0]])
		size += int(binary.BigEndian.Uint32(body[size-4 : size]))
		if len(body) < size {
			return fmt.Errorf("%s: frame %d (%s): the answer ends inside its payload", prefix, n, name)
		}
		if err := s.checkEvent(media.Frames, n, &last, name, body[1+len(name)+4:size]); err != nil {
			return fmt.Errorf("%s: %w", prefix, err)
		}
		body = body[size:]
	}
	if len(media.Frames.EndsWith) > 0 && last == "" {
		return fmt.Errorf("%s: the frames ended without a final event (one of %q)", prefix, media.Frames.EndsWith)
	}
	return nil
}
