//! placeholder: the media manager (SDP offer/answer, port pools, MediaHook) is being written.
