// Compiled by `npx tsc -p js` (never run): the declarations fit the official SDKs' options.
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import {
  connect, attenuate, inspect, openaiOptions, anthropicOptions, withApproval, Models, Budget,
  CapwalletError, type Connection,
} from 'capwallet';

export async function example(): Promise<void> {
  const conn: Connection = await connect({ name: 'Blog Assistant' }, { models: ['gpt-4o-mini'] });
  const openai = new OpenAI(openaiOptions(conn));
  const anthropic = new Anthropic(anthropicOptions(conn));
  const child: string = await attenuate(conn.token, [Models(['gpt-4o-mini']), Budget(5, 'USD', 'total')]);
  const info = await inspect(child);
  const models: string[] | null = info.limits.models;
  const reply = await withApproval(conn, (headers) => openai.chat.completions.create(
    { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }, { headers }));
  const text: string | null = reply.choices[0]?.message.content ?? null;
  void [anthropic, models, text];
  try {
    await connect({ name: 'x' });
  } catch (err) {
    if (err instanceof CapwalletError) console.log(err.code);
  }
}
