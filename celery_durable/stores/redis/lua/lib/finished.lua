local finished = {SUCCEEDED=true, FAILED=true, CANCELLED=true, REPLACED=true}
