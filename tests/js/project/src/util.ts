export enum Mood {
  Happy,
  Grumpy,
}

export interface Greeting {
  to: string;
  mood: Mood;
}

export const shout = (text: string): string => `${text.toUpperCase()}!`;
