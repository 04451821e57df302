local function holds(h, token)
  local v = redis.call('HMGET', h, 'token', 'owner')
  return v[1] == token and v[2] and v[2] ~= ''
end
